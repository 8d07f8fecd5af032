"""pytest-benchmark cases for the CPU-side paths, kept out of the default test run:

    .venv/bin/python -m pytest bench --benchmark-only

Compare runs with --benchmark-autosave / --benchmark-compare.
"""
import pytest
import torch

from micronbert import create_model
from micronbert.kernels import (block_swap_mask, blockwise_swap_patches, diagonal_micro_attention,
                                random_swap_mask)
from micronbert.train import make_optimizer


@pytest.mark.parametrize("batch", [8, 32])
def test_tiny_training_step(benchmark, batch):
    torch.manual_seed(0)
    model = create_model("micronbert_tiny")
    opt = make_optimizer(model, 1e-4)
    x = torch.randn(batch, 3, 64, 64)
    y = x + 0.05 * torch.randn_like(x)
    g = torch.Generator().manual_seed(0)

    def step():
        out = model(x, y, generator=g)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        model.update_teacher(0.996)
    benchmark(step)


@pytest.mark.parametrize("kind", ["block", "random"])
def test_mask_generation_224px(benchmark, kind):
    g = torch.Generator().manual_seed(0)
    fn = block_swap_mask if kind == "block" else random_swap_mask
    benchmark(lambda: fn(64, (28, 28), 0.5, g))


def test_swap_reference_224px(benchmark):
    a = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8)
    b = torch.randint(0, 256, (16, 3, 224, 224), dtype=torch.uint8)
    mask = random_swap_mask(16, 28, 0.5)
    benchmark(lambda: blockwise_swap_patches(a, b, mask, 8, (0.5,) * 3, (0.25,) * 3,
                                             return_target=True, backend="reference"))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_dma_cpu_fwd_bwd(benchmark, backend):
    q, k, v = (torch.randn(4, 1, 784, 512, requires_grad=True) for _ in range(3))

    def run():
        o = diagonal_micro_attention(q, k, v, backend=backend)
        o.sum().backward()
    benchmark(run)
