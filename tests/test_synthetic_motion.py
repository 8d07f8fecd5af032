"""The motion benchmark (issue 25): motion, not place, is the answer; and the regions set
of earlier versions is still written bit for bit."""
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from micronbert.benchmark_checks import check_benchmark, mask_positions
from micronbert.data.synthetic import NO_MOTION, synthetic_clip, write_synthetic_dataset
from micronbert.data.synthetic import benchmark_classes
from micronbert.data.synthetic_motion import MOTION_CLASSES, benchmark_of


def tree_hash(root: str) -> str:
    """sha256 over every file's relative path and bytes (the sheet by its content: an xlsx
    carries its creation time)."""
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode())
            h.update(pd.read_excel(p).to_csv(index=False).encode() if f.endswith(".xlsx")
                     else open(p, "rb").read())
    return h.hexdigest()


def test_regions_none_writes_what_earlier_versions_wrote(tmp_path):
    # the reference: main a794b93 (before the motion benchmark), this venv's Pillow/pandas
    root = write_synthetic_dataset(str(tmp_path / "r"), n_subjects=2, clips_per_class=1, seed=3,
                                   progress=False, benchmark="regions")
    assert tree_hash(root) == "0109bbd35e9af7c1c97c7fe9f88d4d5dad1ca76fd055a5f31c2fb1ee23c1160c"


def _ramp_face(size=64):
    """uint8 (3, H, W): 4 y, 4 x and 0: a frame that says where each pixel came from."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([4 * ys, 4 * xs, 0 * xs]).to(torch.uint8)


@pytest.mark.parametrize("cls", list(MOTION_CLASSES))
def test_each_class_moves_as_named_and_peaks_at_the_amplitude(cls):
    shift, linear = MOTION_CLASSES[cls]
    info = {}
    frames, mask, (on, ap, _) = synthetic_clip(_ramp_face(), ((0.5, 0.5), shift, linear),
                                               torch.Generator().manual_seed(1), info=info)
    u = (frames[on].float() - frames[ap].float())[:2] / 4  # out(p) = in(p - u): u = in - out, (y, x)
    mag, sigma = info["amplitude"], info["sigma"]
    cy, cx = (round(v) for v in info["center"])
    assert 1.0 <= mag <= 3.0 and u.norm(dim=0).max() == pytest.approx(mag, abs=0.3)
    if linear is None:  # a shift: the centre moves by amplitude * direction
        assert u[:, cy, cx].tolist() == pytest.approx([mag * shift[0], mag * shift[1]], abs=0.3)
    else:  # expand (+) / contract (-): one sigma out on each axis, radially, by the amplitude
        sign = 1 if linear[0][0] > 0 else -1
        d = round(sigma)
        assert u[1, cy, cx + d] == pytest.approx(sign * mag, abs=0.35)
        assert u[0, cy + d, cx] == pytest.approx(sign * mag, abs=0.35)
        assert u[:, cy, cx].abs().max() < 0.3  # the centre of a radial motion stays
    assert mask.sum() > 0 and not mask[0].any() and not mask[:, 0].any()  # local


def test_motion_set_records_its_benchmark_and_places(tmp_path):
    root = write_synthetic_dataset(str(tmp_path / "m"), n_subjects=2, clips_per_class=1, n_frames=4,
                                   progress=False, benchmark="motion", nuisance="low")
    meta = json.loads((tmp_path / "m" / "benchmark.json").read_text())
    assert meta["benchmark"] == "motion" and benchmark_of(root) == "motion"
    assert json.loads((tmp_path / "m" / "nuisance.json").read_text())["benchmark"] == "motion"
    sheet = pd.read_excel(os.path.join(root, "CASME2-coding-synthetic.xlsx"))
    assert sorted(set(sheet["Estimated Emotion"])) == sorted([*MOTION_CLASSES, NO_MOTION])
    assert len(meta["clips"]) == len(sheet) == 2 * (len(MOTION_CLASSES) + 1)
    for c in meta["clips"]:
        m = torch.from_numpy(np.asarray(Image.open(os.path.join(root, "masks", c["subject"], c["clip"] + ".png"))) > 127)
        if c["class"] == NO_MOTION:
            assert not m.any() and c["amplitude"] == 0
            continue
        (cy, cx), edge = c["center_yx"], 3 * c["sigma"]
        if min(cy, cx, 63 - cy, 63 - cx) > edge:  # the whole mask inside the frame
            assert (mask_positions(m[None])[0] * 64).tolist() == pytest.approx([cy, cx], abs=1.5)
    assert benchmark_of(write_synthetic_dataset(str(tmp_path / "r"), n_subjects=1, clips_per_class=1,
                                                n_frames=4, progress=False, benchmark="regions")) == "regions"
    with pytest.raises(ValueError, match="unknown benchmark"):
        write_synthetic_dataset(str(tmp_path / "x"), n_subjects=1, progress=False, benchmark="places")


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    """A small motion set and a regions set of the same faces (6 subjects, 2 clips per class);
    one torch thread meanwhile (the LOSO heads are tiny: threads only contend, 25x slower)."""
    d = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {b: write_synthetic_dataset(str(d / b), n_subjects=6, clips_per_class=2, n_frames=4, seed=1,
                                      progress=False, benchmark=b) for b in ("motion", "regions")}
    torch.set_num_threads(threads)


def test_place_does_not_answer_on_the_motion_set_and_motion_does(small_sets):
    res = check_benchmark(small_sets["motion"])
    assert res["benchmark"] == "motion" and res["position"]["n_classes"] == len(MOTION_CLASSES)
    assert res["location_prior_auc"] <= 0.60, res["location_prior_auc"]
    lo, hi = res["position"]["chance_band"]
    assert lo < 1 / 6 < hi and res["position"]["uf1"] <= hi, res["position"]  # at chance
    flow = res["baselines"]["optical_flow"]
    assert flow["uf1"] > flow["chance_band"][1], flow  # a motion-aware feature: above chance


def test_the_checks_catch_place_on_the_regions_set(small_sets):
    res = check_benchmark(small_sets["regions"], baselines=False)
    assert res["benchmark"] == "regions"
    assert res["location_prior_auc"] > 0.8, res["location_prior_auc"]
    assert res["position"]["uf1"] > 0.9 > res["position"]["chance_band"][1], res["position"]


def test_synth_writes_the_motion_benchmark_unless_told_regions(tmp_path):
    from micronbert.cli import main
    for flags, want in (([], "motion"), (["--benchmark", "regions"], "regions")):
        out = tmp_path / want
        assert main(["synth", "--out", str(out), "--subjects", "1", "--clips-per-class", "1", *flags]) == 0
        assert benchmark_of(str(out)) == want
        sheet = pd.read_excel(out / "CASME2-coding-synthetic.xlsx")
        assert set(sheet["Estimated Emotion"]) == set(benchmark_classes(want))
