"""The benchmark scripts call the model the way it calls its ops: bench_train swaps in the
authors' swap for the model's fused one, so its signature must follow the model's call
(bench/gpu.sh's training table depends on it, and no other test runs it)."""
import os
import sys

import torch

import micronbert.model as M
from micronbert import create_model
from micronbert.kernels import random_swap_mask

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_train  # noqa: E402


def test_bench_train_authors_swap_is_the_models_swap(monkeypatch, seed):
    model = create_model("micronbert_tiny", backend="reference")
    c = model.config
    g = torch.Generator().manual_seed(seed)
    h, w = c.img_size
    x = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=g)
    mask = random_swap_mask(3, (h // c.patch_size, w // c.patch_size), 0.5, generator=g)
    ours = model.swap_patches(x, y, mask)
    monkeypatch.setattr(M, "blockwise_swap_patches", bench_train.authors_swap)
    theirs = model.swap_patches(x, y, mask)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-5, atol=1e-5)
