"""Each frame encoded once: spot's streaming scores (``score_video`` with ``ModelScorer.encode``
and ``pairs``) equal the old two-encodes-per-pair scores, the carried tail re-encoded only when
the face box moves; visualize/maps reuse one encoding per frame (``MicronBERT.dma_between``)."""
import numpy as np
import torch

from micronbert import create_model
from micronbert.spot import ModelScorer, run as spot_run
from micronbert.spot.run import score_video


class TwoEncodes:
    """The old route: every pair (t - k, t) through ``encode_then_dma`` of both frames."""

    def __init__(self, scorer):
        self.scorer, self.size = scorer, scorer.size

    def __call__(self, a, b):
        return self.scorer(a, b)


def _frames(n=34, h=40, w=56, seed=0):
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (h, w, 3)).astype(np.float32)
    drift = np.cumsum(g.normal(0, 2.0, n))  # a brightness drift and local noise per frame
    return [np.clip(base + d + g.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8) for d in drift]


def test_spot_encode_once_equals_two_encodes_and_reencodes_only_on_a_new_box(monkeypatch):
    torch.manual_seed(0)
    model = create_model("micronbert_tiny").eval()
    frames, k, window = _frames(), 3, 8  # chunks of 8 frames: 5 chunks (the last of 2)
    boxes = [(0, 0, 40, 40)] * 2 + [(16, 0, 56, 40)] * 3  # the box moves at the third chunk

    def run(scorer):
        it = iter(boxes)
        monkeypatch.setattr(spot_run, "chunk_box", lambda arr, prev, path: (next(it), True))
        return score_video("synthetic", {"m": scorer}, k, window, batch=5, progress=False,
                           n_frames=len(frames), frames=iter(frames))["scores"]["m"]

    scorer = ModelScorer(model, "cpu", precision="fp32")
    encoded = []
    encode = scorer.encode
    monkeypatch.setattr(scorer, "encode", lambda f, batch=64: (encoded.append(len(f)), encode(f, batch))[1])
    once = run(scorer)
    assert sum(encoded) == len(frames) + k  # every frame once, the tail again at the one new box
    monkeypatch.setattr(scorer, "encode", encode)
    twice = run(TwoEncodes(scorer))
    assert np.isnan(once[:k]).all() and np.isnan(twice[:k]).all()
    np.testing.assert_allclose(once[k:], twice[k:], rtol=1e-4, atol=1e-6)
    assert np.std(once[k:]) > 0  # the scores differ between pairs: not a constant


def test_dma_between_equals_encode_then_dma():
    torch.manual_seed(1)
    model = create_model("micronbert_tiny").eval()
    a, b = (torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8) for _ in range(2))
    with torch.no_grad():
        _, out, diag, s = model.encode_then_dma([model.patchify(a), model.patchify(b)])
        xa, xb = model.backbone(model.patchify(a)), model.backbone(model.patchify(b))
        out2, diag2, s2 = model.dma_between(xa, xb)
    for x, y in ((out, out2), (diag, diag2), (s, s2)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
