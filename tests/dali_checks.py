"""DALI loader checks, run in a subprocess by test_data.py (see _in_subprocess there)."""
import os

import numpy as np
import pytest
import torch

from micronbert.data.io import DataError, write_video
from micronbert.data.pairs import DaliPairLoader, PairLoader, find_clips


def jpeg_frames_match(synth):
    clips = find_clips(synth)
    kw = dict(size=64, batch_size=4, delta=(1, 4), seed=2, samples_per_epoch=16)
    cpu, dali = list(PairLoader(clips, **kw)), list(DaliPairLoader(clips, device="cpu", **kw))
    assert len(cpu) == len(dali) == 4
    for a, b in zip(cpu, dali):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["swap_mask"], b["swap_mask"])
        for k in ("frame_t", "frame_next"):
            diff = (a[k].int() - b[k].int()).abs()
            assert diff.float().mean() < 0.5 and diff.max() <= 8, (k, diff.float().mean(), diff.max())


def mjpeg_video_matches(tmp):
    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):
        base = rng.integers(0, 255, (1, 48, 48, 3))
        frames = np.clip(base + rng.integers(-20, 20, (10, 48, 48, 3)), 0, 255).astype(np.uint8)
        clips.append(os.path.join(tmp, f"v{i}.avi"))
        write_video(frames, clips[-1], fps=10, codec="mjpeg")
    kw = dict(size=48, batch_size=3, delta=(1, 5), seed=1, samples_per_epoch=9)
    n = 0
    for a, b in zip(PairLoader(clips, **kw), DaliPairLoader(clips, device="cpu", **kw)):
        for k in ("frame_t", "frame_next"):
            assert (a[k].int() - b[k].int()).abs().float().mean() < 0.5
        n += 1
    assert n == 3


def bad_input(tmp, synth):
    bad = os.path.join(tmp, "broken.avi")
    with open(bad, "wb") as f:
        f.write(b"junk" * 10)
    with pytest.raises(DataError, match="one kind"):
        DaliPairLoader(find_clips(synth) + [bad], 64, 2, device="cpu")
    with pytest.raises(DataError, match="broken.avi"):
        list(DaliPairLoader([bad], 64, 2, device="cpu", samples_per_epoch=4))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA"):
            DaliPairLoader(find_clips(synth), 64, 2, device="gpu")
