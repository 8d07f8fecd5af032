"""The pictures explain themselves: colour bars, row labels, a caption, titles, every loss
(checked by the artists on the returned matplotlib Figures)."""
import json

import numpy as np
import pytest
import torch

from micronbert.viz import save_curves, save_motion_maps


def _pairs(b=2, s=16):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 255, (b, 3, s, s), dtype=torch.uint8, generator=g)
    return a, a.flip(-1), torch.rand(b, s, s, generator=g), torch.rand(b, s, s, generator=g) > 0.5


def _colorbar_labels(fig):
    return [ax.get_xlabel() for ax in fig.axes if hasattr(ax, "_colorbar")]


@pytest.mark.parametrize("with_truth", [True, False])
def test_motion_maps_have_colorbars_row_labels_caption_and_truth_column(tmp_path, with_truth):
    a, b, maps, truth = _pairs()
    labels = ["sub01 EP01_01\nsurprise\nframes 1 -> 5", "sub02 EP03_01\nhappiness\nframes 2 -> 7"]
    fig = save_motion_maps(tmp_path / "m.png", a, b, maps, truth if with_truth else None,
                           title="T", row_labels=labels)
    assert (tmp_path / "m.png").stat().st_size > 0
    assert len(_colorbar_labels(fig)) == 2 and all(_colorbar_labels(fig))
    grid = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(grid) == 2 * 5  # the true-motion column is there with or without a mask
    assert [grid[5 * i].get_ylabel() for i in range(2)] == labels
    assert [ax.get_title() for ax in grid[:5]][-1] == "true motion"
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "d = the number of frames" in caption and "T" == fig._suptitle.get_text()
    if with_truth:
        assert len(grid[4].images) == 1
    else:
        assert "no ground-truth mask" in grid[4].texts[0].get_text() and not grid[4].images


def test_loss_curves_have_axis_labels_and_every_logged_loss(tmp_path):
    recs = [{"step": i, "loss": 2.0 / (i + 1), "rec_loss": 1.0 / (i + 1), "poi_loss": 0.5,
             "diag_loss": 0.1 * (i + 1), "new_loss": 0.3, "lr": 1e-3} for i in range(5)]
    fig = save_curves(tmp_path / "l.png", recs)
    ax = fig.axes[0]
    assert ax.get_ylabel() and ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["loss", "rec_loss", "poi_loss", "diag_loss", "new_loss"]  # not "lr"
    for r in recs:
        r["diag_loss"] = 0.0
    legend = [t.get_text() for t in save_curves(tmp_path / "l.png", recs).axes[0].get_legend().get_texts()]
    assert "diag_loss: off in this config (its weight is 0), not drawn" in legend


def test_visualize_titles_checkpoint_clip_frames_and_shows_the_mask(tmp_path, monkeypatch):
    import micronbert.viz as viz
    from micronbert.cli import main
    figs = []
    real = viz.save_motion_maps
    monkeypatch.setattr(viz, "save_motion_maps", lambda *a, **k: figs.append(real(*a, **k)))
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--subjects", "1", "--clips-per-class", "1"]) == 0
    assert main(["visualize", "--model", "micronbert_tiny", "--clip", str(data / "sub01" / "EP01_01"),
                 "--out", str(tmp_path / "viz")]) == 0
    fig = figs[-1]
    title = fig._suptitle.get_text()
    assert "micronbert_tiny" in title and "EP01_01" in title and "frame 1 vs frames" in title
    grid = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(grid[4].images) == 1  # the synth set's mask
    assert grid[0].get_ylabel().startswith("frames 1 -> ")


def test_confusion_matrix_is_normalised_per_true_class_with_counts(tmp_path):
    from micronbert.viz import save_confusion
    m = np.array([[3, 1], [0, 4]])
    ax = save_confusion(tmp_path / "c.png", m, ["happy", "sad"], title="LOSO").axes[0]
    assert (ax.get_xlabel(), ax.get_title()) == ("predicted", "LOSO")
    assert ax.get_ylabel().startswith("true (each row sums to 1")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["happy", "sad"]
    assert [t.get_text() for t in ax.texts] == ["0.75\n(3)", "0.25\n(1)", "0.00\n(0)", "1.00\n(4)"]
    raw = save_confusion(tmp_path / "c.png", m, ["happy", "sad"], normalise=False).axes[0]
    assert sorted(t.get_text() for t in raw.texts) == ["0", "1", "3", "4"]


def test_no_truth_column_without_a_mask(tmp_path):
    a, b, maps, _ = _pairs()
    fig = save_motion_maps(tmp_path / "m.png", a, b, maps, None, no_truth=None)
    grid = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(grid) == 2 * 4 and "true motion" not in [ax.get_title() for ax in grid]


def test_bars_draw_a_chance_line_per_metric_and_a_point_per_fold(tmp_path):
    from micronbert.viz import save_bars
    ax = save_bars(tmp_path / "b.png", {"model": {"map": 0.6, "uf1": 0.3}, "flow": {"map": 0.5, "uf1": 0.4}},
                   keys=[("map", "map ROC-AUC"), ("uf1", "UF1")], chance={"map": 0.5, "uf1": 0.2},
                   spread={"model": {"uf1": [0.1, 0.5, 0.3]}}).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "chance of map ROC-AUC = 0.50" in legend and "chance of UF1 = 0.20" in legend
    assert sorted(y for ln in ax.lines for y in ln.get_ydata() if ln.get_marker() == ".") == [0.1, 0.3, 0.5]


def test_visualize_crops_the_face_box_of_spot_and_draws_no_mask_column_without_a_mask(tmp_path, monkeypatch):
    import micronbert.spot.frames as frames
    import micronbert.viz as viz
    from PIL import Image

    from micronbert.cli import main
    figs, boxes = [], []
    real = viz.save_motion_maps
    monkeypatch.setattr(viz, "save_motion_maps", lambda *a, **k: figs.append(real(*a, **k)))
    monkeypatch.setattr(frames, "chunk_box", lambda f, prev, name: boxes.append(f.shape) or ((40, 8, 72, 40), True))
    clip = tmp_path / "clip"
    clip.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):  # noise everywhere but a flat square where the face box is
        img = g.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        img[8:40, 40:72] = (10, 200, 30)
        Image.fromarray(img).save(clip / f"img{i + 1}.png")
    assert main(["visualize", "--model", "micronbert_tiny", "--clip", str(clip), "--out", str(tmp_path / "v")]) == 0
    assert boxes == [(3, 64, 96, 3)]  # the whole clip went through spot's face box
    grid = [ax for ax in figs[-1].axes if not hasattr(ax, "_colorbar")]
    shown = np.asarray(grid[0].images[0].get_array())
    assert (shown == np.array([10, 200, 30], dtype=np.uint8)).all()  # I_t is the box's crop
    assert len(grid) == 2 * 4  # no true-motion column: the clip has no mask
    assert not any("mask" in t.get_text() for ax in grid for t in ax.texts)
