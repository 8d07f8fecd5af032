"""Synthetic nuisance: the levels are applied, the masks stay exact and local, and
``none`` writes what earlier versions wrote."""
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from micronbert.data.synthetic import (NO_MOTION, NUISANCE, _write_clip, face_images, random_motion,
                                       synthetic_clip, write_synthetic_dataset)

CLEAN = NUISANCE["none"]
ONLY = dataclasses.replace(CLEAN, amplitude=(1.0, 3.0))  # a level with nothing on: build from it


def _clip(nz, cls="left_brow_raise", seed=3, face=4, info=None):
    g, gn = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    return synthetic_clip(face_images(64)[face], cls, g, nuisance=nz, gn=gn, info=info)


def test_none_reproduces_the_clips_of_earlier_versions():
    # sha256 of these clips as micronbert 667416d (before --nuisance) wrote them, torch CPU
    g = torch.Generator().manual_seed(0)
    f = face_images(64)
    h = hashlib.sha256()
    for face, cls in ((1, "left_brow_raise"), (1, "right_mouth_corner_pull"), (2, None)):
        fr, m, t = synthetic_clip(f[face], cls or random_motion(g), g, nuisance="none")
        assert t == (1, 6, 11)
        h.update(fr.numpy().tobytes())
        h.update(m.numpy().tobytes())
    assert h.hexdigest() == "0e2083dbf18e093c1a93fc9ad5764f440b0ccc8ca062bb16ae128e4b51c2a936"
    a, b = _clip("none"), synthetic_clip(face_images(64)[4], "left_brow_raise", torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="nuisance level"):
        _clip("extreme")


def test_head_shift_is_a_global_shift_of_the_frame():
    import cv2
    nz = dataclasses.replace(ONLY, shift=4.0)
    fr, mask, _ = _clip(nz, cls=NO_MOTION)
    assert not mask.any()  # head motion is not motion in the mask
    # the path the clip drew: the first two paths of its nuisance stream are (ty, tx)
    from micronbert.data.synthetic import _path
    gn = torch.Generator().manual_seed(4)
    ty, tx = _path(gn, 12, 4.0), _path(gn, 12, 4.0)
    grey = fr.float().mean(1).numpy().astype(np.float64)
    win = cv2.createHanningWindow(grey.shape[1:][::-1], cv2.CV_64F)
    (sx, sy), _ = cv2.phaseCorrelate(grey[0], grey[-1], win)
    assert abs(sx - float(tx[-1] - tx[0])) < 0.5 and abs(sy - float(ty[-1] - ty[0])) < 0.5
    assert max(abs(float(tx[-1] - tx[0])), abs(float(ty[-1] - ty[0]))) > 1  # it did move


def test_noise_level_blur_light_and_jpeg_quality(tmp_path):
    clean = _clip(ONLY)[0].float()
    for sigma in (2.0, 6.0):
        noisy = _clip(dataclasses.replace(ONLY, noise=sigma))[0].float()
        assert abs((noisy - clean).std().item() - sigma) < 0.15 * sigma
    blurred = _clip(dataclasses.replace(ONLY, blur=1.2))[0].float()
    grad = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean().item()  # noqa: E731
    assert grad(blurred) < 0.9 * grad(clean)
    for light in ({"gain": 0.2}, {"offset": 20.0}, {"gradient": 0.2}):
        lit = _clip(dataclasses.replace(ONLY, **light))[0].float()
        assert (lit - clean).abs().mean((1, 2, 3)).max() > 5, light
    errs = {}
    for q in (97, 50):
        nz = dataclasses.replace(ONLY, jpeg=q, chroma="420" if q < 90 else "444")
        _write_clip(str(tmp_path / str(q)), "s", "c", clean.round().to(torch.uint8),
                    torch.zeros(64, 64, dtype=torch.bool), 30, False, nz)
        back = np.asarray(Image.open(tmp_path / str(q) / "s" / "c" / "img1.jpg")).astype(float)
        errs[q] = np.abs(back - clean[0].permute(1, 2, 0).numpy()).mean()
    assert errs[50] > 2 * errs[97]
    # the levels grow: more change between onset and apex of a clip without micro-motion
    change = [(lambda f: (f[6].float() - f[1].float()).abs().mean().item())(_clip(lv, cls=NO_MOTION)[0])
              for lv in ("none", "low", "medium", "high")]
    assert change[0] == 0 and change[1] < change[2] < change[3]


@pytest.mark.parametrize("level", ["low", "medium", "high"])
def test_masks_stay_exact_and_local(level):
    nz = NUISANCE[level]
    _, still, _ = _clip(nz, cls=NO_MOTION)
    assert not still.any()
    # the same clip without noise or compression: the mask is the same (it comes from the
    # displacement field, not from the frames)
    info = {}
    fr, mask, (on, ap, _) = _clip(nz, info=info)
    _, mask_clean, _ = _clip(dataclasses.replace(nz, noise=0.0, blur=0.0, gain=0.0, offset=0.0, gradient=0.0))
    assert torch.equal(mask, mask_clean) and mask.any()
    assert nz.amplitude[0] <= info["amplitude"] <= nz.amplitude[1]
    # what the micro-motion changes: the same clip (same head path, light, noise) with and
    # without it; the change sits in the mask
    fr0, mask0, _ = _clip(dataclasses.replace(nz, amplitude=(0.0, 0.0)))
    assert not mask0.any()
    diff = (fr[ap].float() - fr0[ap].float()).abs().mean(0)
    assert diff[mask].mean() > 5 * diff[~mask].mean()
    assert (diff > 8)[~mask].float().mean() < 0.01  # strong change only where the mask says


def test_mask_moves_with_the_head():
    info = {}
    fr, mask, _ = _clip(dataclasses.replace(ONLY, shift=4.0), info=info)
    _, mask_still_head, _ = _clip(ONLY)
    from micronbert.data.synthetic import _path
    gn = torch.Generator().manual_seed(4)
    ty, tx = _path(gn, 12, 4.0), _path(gn, 12, 4.0)
    moved = np.argwhere(mask.numpy()).mean(0) - np.argwhere(mask_still_head.numpy()).mean(0)
    assert np.allclose(moved, [float(ty[6]), float(tx[6])], atol=0.5)


def test_write_nuisance_set_has_no_motion_class_and_amplitudes(tmp_path):
    from micronbert.data.annotations import load_annotations
    root = write_synthetic_dataset(str(tmp_path / "d"), n_subjects=1, clips_per_class=1, progress=False,
                                   nuisance="low")
    t = load_annotations("synthetic", root)
    assert len(t) == 5 and NO_MOTION in set(t.emotion) and t.label.nunique() == 5
    r = t[t.emotion == NO_MOTION].iloc[0]
    assert not (np.asarray(Image.open(os.path.join(root, "masks", r["subject"], r["clip"] + ".png"))) > 127).any()
    conf = json.loads((tmp_path / "d" / "nuisance.json").read_text())
    assert conf["level"] == "low" and conf["jpeg"] == NUISANCE["low"].jpeg
    import pandas as pd
    amp = pd.read_excel(tmp_path / "d" / "CASME2-coding-synthetic.xlsx")["Amplitude"]
    assert ((amp == 0) == (pd.read_excel(tmp_path / "d" / "CASME2-coding-synthetic.xlsx")["Estimated Emotion"]
                           == NO_MOTION)).all()


def test_video_nuisance_is_h264_420_at_the_level_crf(tmp_path):
    import av

    from micronbert.data.io import read_frames
    root = write_synthetic_dataset(str(tmp_path / "v"), n_subjects=1, clips_per_class=1, progress=False,
                                   nuisance="high", video=True)
    path = os.path.join(root, "sub01", "EP05_01.mp4")
    with av.open(path) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
    assert read_frames(path).shape == (12, 64, 64, 3)
