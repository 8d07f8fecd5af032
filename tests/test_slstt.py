"""SLSTT (micronbert.slstt): onset -> frame flow, aggregators, flow augmentation, LOSO
training on a planted motion, fold isolation, the flow cache."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from micronbert.augment import PairAugment
from micronbert.recognition.folds import loso_splits
from micronbert.recognition.finetune import FinetuneConfig
from micronbert.slstt import (clip_flows, create_slstt, flow_augment, flows_from_onset, sample_indices,
                              slstt_predictions, tvl1_unavailable_reason)
from micronbert.slstt import train as slstt_train
from micronbert.slstt.model import SLSTTConfig


def _texture(size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(1, 1, size // 4, size // 4, generator=g), size=(size, size),
                      mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 200 + 20)[0, 0]


def _shifted(img, dx, dy):
    """img (H, W) translated by (dx, dy) px (content moves right/down), as uint8 (3, H, W)."""
    h, w = img.shape
    theta = torch.tensor([[[1.0, 0.0, -2 * dx / w], [0.0, 1.0, -2 * dy / h]]])
    out = F.grid_sample(img[None, None], F.affine_grid(theta, [1, 1, h, w], align_corners=False),
                        mode="bicubic", padding_mode="border", align_corners=False)[0, 0]
    return out.round().clamp(0, 255).to(torch.uint8).expand(3, h, w)


def test_flow_from_onset_to_every_frame_gives_the_known_shift():
    img = _texture()
    shifts = [(0.5, 0.0), (1.0, -0.5), (1.5, 1.0), (2.0, 0.0)]  # frame k moved (dx, dy) from onset
    frames = torch.stack([_shifted(img, dx, dy) for dx, dy in shifts])
    fl = flows_from_onset(_shifted(img, 0, 0), frames)
    assert fl.shape == (4, 3, 64, 64)
    inner = fl[:, :, 12:-12, 12:-12]
    for k, (dx, dy) in enumerate(shifts):  # from the ONSET, not the previous frame
        assert abs(inner[k, 0].median().item() - dx) < 0.15, (k, inner[k, 0].median())
        assert abs(inner[k, 1].median().item() - dy) < 0.15, (k, inner[k, 1].median())
        assert torch.allclose(fl[k, 2], fl[k, :2].norm(dim=0))


def test_sample_indices_lie_after_onset_up_to_offset():
    assert sample_indices(1, 11, 5) == [3, 5, 7, 9, 11]
    assert sample_indices(2, 3, 3) == [3, 3, 3]  # a short clip repeats frames, never the onset
    assert all(2 < i <= 12 for i in sample_indices(2, 12, 4))


def test_tvl1_is_computed_or_named_unavailable():
    reason = tvl1_unavailable_reason()
    if reason is None:
        img = _texture()
        fl = flows_from_onset(_shifted(img, 0, 0), _shifted(img, 1.0, 0)[None], "tvl1")
        assert abs(fl[0, 0, 12:-12, 12:-12].median().item() - 1.0) < 0.2
    else:
        assert "cv2.optflow" in reason
        with pytest.raises(RuntimeError, match="cv2.optflow"):
            flows_from_onset(_shifted(_texture(), 0, 0), _shifted(_texture(), 1, 0)[None], "tvl1")


def test_lstm_depends_on_order_mean_does_not():
    x = torch.randn(2, 5, 3, 32, 32)
    perm = torch.tensor([3, 0, 4, 1, 2])
    for agg, invariant in (("lstm", False), ("mean", True)):
        torch.manual_seed(0)
        net = create_slstt(SLSTTConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                       frames=5, lstm_hidden=16, aggregator=agg), 3).eval()
        a, b = net(x), net(x[:, perm])
        assert torch.allclose(a, b, atol=1e-5) == invariant, agg


def test_flow_augment_flip_negates_u_and_keeps_v():
    flows = torch.zeros(1, 2, 3, 16, 16)
    flows[:, :, 0], flows[:, :, 1] = 2.0, 0.5
    flows[:, :, 2] = flows[:, :, :2].norm(dim=2)
    out = flow_augment(flows, PairAugment(crop_scale=(1.0, 1.0), rotate=0.0, flip=1.0, jitter=0.0),
                       torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, 0], torch.full_like(out[:, :, 0], -2.0), atol=1e-5)
    assert torch.allclose(out[:, :, 1], torch.full_like(out[:, :, 1], 0.5), atol=1e-5)
    assert torch.allclose(out[:, :, 2], flows[:, :, 2], atol=1e-5)
    # a crop of side s magnifies the motion by 1 / s
    crop = flow_augment(flows, PairAugment(crop_scale=(0.25, 0.25), rotate=0.0, flip=0.0, jitter=0.0),
                        torch.Generator().manual_seed(0))
    assert torch.allclose(crop[:, :, 0], torch.full_like(crop[:, :, 0], 4.0), atol=1e-4)


def _planted(n_subjects=3, per_class=3, seed=0):
    """Flows (K, T, 3, 16, 16): class 0 moves the left half up, class 1 the right half down,
    each rising over the T fields, plus noise; subjects s0.."""
    g = torch.Generator().manual_seed(seed)
    xs, ys, subs = [], [], []
    for s in range(n_subjects):
        for c in range(2):
            for _ in range(per_class):
                x = 0.3 * torch.randn(3, 3, 16, 16, generator=g)
                amp = torch.tensor([0.5, 1.0, 1.5]).view(3, 1, 1)
                if c == 0:
                    x[:, 1, :, :8] -= amp
                else:
                    x[:, 1, :, 8:] += amp
                x[:, 2] = x[:, :2].norm(dim=1)
                xs.append(x)
                ys.append(c)
                subs.append(f"s{s}")
    return torch.stack(xs), torch.tensor(ys), np.array(subs)


_SMALL = SLSTTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, frames=3,
                     lstm_hidden=16, drop_path=0.0)
_CFG = FinetuneConfig(epochs=15, batch=6, lr=3e-3, warmup_epochs=1, layer_decay=1.0,
                      aug=PairAugment(crop_scale=(1.0, 1.0), rotate=0.0, flip=0.0, jitter=0.0))


@pytest.mark.parametrize("agg", ["lstm", "mean"])
def test_planted_motion_is_learned_to_uf1_one(agg):
    from dataclasses import replace
    from micronbert.recognition.report import metrics
    torch.set_num_threads(1)
    x, y, subs = _planted()
    splits, _ = loso_splits(subs, y, 2)
    pred = slstt_predictions(x, y, splits, 2, replace(_SMALL, aggregator=agg), _CFG, progress=False)
    assert metrics(y.numpy(), pred.numpy(), 2)["uf1"] == 1.0


def test_held_out_subject_never_reaches_training(monkeypatch):
    x, y, subs = _planted(n_subjects=3, per_class=2)
    x = x + torch.arange(len(x)).float().view(-1, 1, 1, 1, 1) * 1e-3  # every clip unique
    splits, _ = loso_splits(subs, y, 2)
    seen = []
    real = slstt_train.train_slstt_fold

    def spy(scfg, xt, yt, n, cfg, device, log, subject, tag, progress):
        seen.append((subject, xt.clone()))
        return real(scfg, xt, yt, n, cfg, device, log, subject, tag, progress)

    monkeypatch.setattr(slstt_train, "train_slstt_fold", spy)
    slstt_predictions(x, y, splits, 2, _SMALL, FinetuneConfig(epochs=1, batch=4, aug=_CFG.aug), progress=False)
    assert [s for s, _ in seen] == ["s0", "s1", "s2"]
    for subject, xt in seen:
        held = x[torch.from_numpy(subs == subject)]
        assert len(xt) == int((subs != subject).sum())
        assert not any(torch.equal(h, t) for h in held for t in xt), subject


def test_flow_cache_is_reused_and_a_damaged_file_recomputed(tmp_path):
    from micronbert.data.report import DataReport
    img = _texture(32)
    clip = tmp_path / "clip"
    clip.mkdir()
    import cv2
    for k in range(6):
        cv2.imwrite(str(clip / f"img{k + 1}.png"), _shifted(img, 0.4 * k, 0).permute(1, 2, 0).numpy())
    row = SimpleNamespace(path=str(clip), onset_index=0, offset_index=5, onset=1, offset=6)
    cache = str(tmp_path / "cache")
    a = clip_flows(row, 32, 3, cache_dir=cache)
    files = os.listdir(cache)
    assert len(files) == 1 and a.shape == (3, 3, 32, 32)
    assert a[-1, 0, 8:-8, 8:-8].median() > a[0, 0, 8:-8, 8:-8].median() + 0.5  # frames 2, 4, 6 (1-based)
    torch.save(torch.full((3, 3, 32, 32), 7.0), os.path.join(cache, files[0]))
    assert torch.equal(clip_flows(row, 32, 3, cache_dir=cache), torch.full((3, 3, 32, 32), 7.0))  # read, not computed
    with open(os.path.join(cache, files[0]), "wb") as f:
        f.write(b"not a tensor")
    report = DataReport()
    assert torch.equal(clip_flows(row, 32, 3, cache_dir=cache, report=report), a)
    assert "repaired flow cache" in str(report.as_dict())
    clip_flows(row, 32, 4, cache_dir=cache)  # another T: another file
    assert len(os.listdir(cache)) == 2


def _tiny_set(tmp_path):
    from micronbert.data.synthetic import write_synthetic_dataset
    data = str(tmp_path / "data")
    write_synthetic_dataset(data, n_subjects=2, clips_per_class=1, seed=0)
    return data


def test_finetune_command_trains_slstt_and_writes_loso_and_fold_models(tmp_path):
    """``micronbert finetune --model slstt_tiny`` on a tiny synthetic set: loso.json with the
    baselines, a log and a model per fold that reloads, the flow cache filled."""
    import json
    from micronbert.cli import main
    from micronbert.slstt import load_slstt
    torch.set_num_threads(1)
    data, out = _tiny_set(tmp_path), str(tmp_path / "out")
    line = ["finetune", "--data", data, "--dataset", "synthetic", "--model", "slstt_tiny", "--epochs", "1",
            "--batch", "4", "--head-epochs", "5", "--save-models", "--aggregator", "mean"]
    assert main(line + ["--out", out]) == 0
    res = json.load(open(os.path.join(out, "loso.json")))
    assert res["slstt_model"] == "slstt_tiny" and res["slstt"]["aggregator"] == "mean"
    assert set(res["baselines"]) == {"pixel_difference", "optical_flow"}  # SLSTT has no untrained twin
    assert res["n_clips_scored"] == res["n_clips"] and res["finetune"]["aug"]["flip"] == 0.0
    assert res["finetune"]["epochs"] == 1 and res["finetune"]["batch"] == 4
    assert len(os.listdir(os.path.join(out, "flow_cache"))) == res["n_clips"]
    net, ck = load_slstt(os.path.join(out, "fold_sub01.pt"))
    assert ck["subject"] == "sub01" and net.config.aggregator == "mean"
    assert sum(1 for _ in open(os.path.join(out, "fold_sub01.jsonl"))) == 2  # 1 epoch + the test line
    over = str(tmp_path / "over")
    assert main(line[:-2] + ["--overrides", '{"frames": 2}', "--baselines", "none", "--out", over]) == 0
    res = json.load(open(os.path.join(over, "loso.json")))
    assert res["slstt"]["frames"] == 2 and res["slstt"]["aggregator"] == "lstm" and res["baselines"] == {}


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint", "x.pt"], "drop --checkpoint"), (["--freeze"], "drop --freeze"),
    (["--overrides", '{"nope": 1}'], "--overrides"), (["--baselines", "default,slsst"], "unknown baseline 'slsst'")]
    + ([(["--flow", "tvl1"], "cv2.optflow")] if tvl1_unavailable_reason() else []))
def test_finetune_command_refuses_what_slstt_cannot_take(tmp_path, capsys, flags, message):
    from micronbert.cli import main
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--data", str(tmp_path), "--dataset", "synthetic", "--model", "slstt_tiny",
              "--out", str(tmp_path / "out"), *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_flow_tvl1_stops_naming_what_is_missing(tmp_path):
    from micronbert.slstt.train import finetune_slstt
    from micronbert.data.annotations import load_annotations
    if not tvl1_unavailable_reason():
        pytest.skip("this OpenCV has TV-L1")
    table = load_annotations("synthetic", _tiny_set(tmp_path))
    with pytest.raises(RuntimeError, match="cv2.optflow"):
        finetune_slstt(table, str(tmp_path / "out"), table.attrs["classes"], flow="tvl1", epochs=1, batch=4)


@pytest.mark.parametrize("cmd", ["evaluate", "finetune"])
def test_baselines_slstt_adds_its_row_on_the_same_folds(tmp_path, cmd):
    """``--baselines pixel_difference,slstt`` puts exactly those rows beside μ-BERT (evaluate:
    the probe; finetune: fine-tuned), SLSTT scored on every clip of the same folds."""
    import json
    from micronbert.cli import main
    torch.set_num_threads(1)
    data, out = _tiny_set(tmp_path), str(tmp_path / cmd)
    extra = ["--epochs", "1", "--batch", "4"] if cmd == "finetune" else []
    assert main([cmd, "--data", data, "--dataset", "synthetic", "--model", "micronbert_tiny", "--out", out,
                 "--head-epochs", "5", "--baselines", "pixel_difference,slstt", "--aggregator", "mean",
                 *extra]) == 0
    res = json.load(open(os.path.join(out, "loso.json")))
    assert set(res["baselines"]) == {"pixel_difference", "slstt"}
    row = res["baselines"]["slstt"]
    assert "mean aggregator" in row["how"] and len(row["per_fold"]) == len(res["model"]["per_fold"]) == 2
    assert [f["subject"] for f in row["per_fold"]] == [f["subject"] for f in res["model"]["per_fold"]]
    assert sum(f["n"] for f in row["per_fold"]) == res["n_clips"]
    assert sorted(os.listdir(os.path.join(out, "slstt"))) == ["fold_names.json", "fold_sub01.jsonl",
                                                             "fold_sub02.jsonl"]
    assert len(os.listdir(os.path.join(out, "flow_cache"))) == res["n_clips"]
