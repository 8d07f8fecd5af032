"""Bad input to the fused ops: one clear error, the same on every path (issue 14, "Ops")."""
import numpy as np
import pytest
import torch

from conftest import DEVICE, ON_CUDA
from micronbert.kernels import (blockwise_swap_patches, diagonal_micro_attention, dma_ref, patchify,
                                swap_patches_ref)

FUSED = ["torch", "triton"]


def _qkv(n=6, d=4, grad=False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 1, n, d, generator=g).to(DEVICE).requires_grad_(grad) for _ in range(3)]


@pytest.mark.parametrize("chunk", [-1, 0])
def test_non_positive_chunk_is_an_error(chunk):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        diagonal_micro_attention(q, k, v, backend="torch", chunk=chunk)


def test_chunk_must_be_an_integer_and_numpy_integers_work():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="chunk"):
        diagonal_micro_attention(q, k, v, backend="torch", chunk=2.5)
    torch.testing.assert_close(diagonal_micro_attention(q, k, v, backend="torch", chunk=np.int64(4)),
                               dma_ref(q, k, v)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", FUSED)
def test_double_backward_of_the_fused_paths_raises(backend):
    q, k, v = _qkv(grad=True)
    o = diagonal_micro_attention(q, k, v, backend=backend)
    with pytest.raises(RuntimeError, match="no double backward.*reference"):
        torch.autograd.grad(o.square().sum(), q, create_graph=True)
    # a plain backward still works, and the reference path has a real double backward
    o = diagonal_micro_attention(q, k, v, backend=backend)
    (gq,) = torch.autograd.grad(o.square().sum(), q)
    (gr,) = torch.autograd.grad(dma_ref(q, k, v)[0].square().sum(), q, create_graph=True)
    assert gr.requires_grad
    torch.testing.assert_close(gq, gr.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_key_bias_must_be_floating_point(backend, dtype):
    q, k, v = _qkv()
    bias = torch.ones(2, 6, dtype=dtype, device=DEVICE)
    with pytest.raises(TypeError, match="key_bias must be a floating-point tensor"):
        diagonal_micro_attention(q, k, v, key_bias=bias, backend=backend)
    with pytest.raises(TypeError, match="key_bias"):
        dma_ref(q, k, v, key_bias=bias)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_plus_inf_key_bias_is_an_error_minus_inf_a_mask(backend):
    q, k, v = _qkv()
    bias = torch.zeros(2, 6, device=DEVICE)
    bias[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"key_bias holds \+inf.*\(1, 0, 2\)"):
        diagonal_micro_attention(q, k, v, key_bias=bias, backend=backend)
    bias[1, 2] = float("nan")
    with pytest.raises(ValueError, match="key_bias"):
        diagonal_micro_attention(q, k, v, key_bias=bias, backend=backend)
    bias[1, 2] = float("-inf")
    o, d = diagonal_micro_attention(q, k, v, key_bias=bias, backend=backend, return_diag=True)
    assert torch.isfinite(o).all() and d[1, 0, 2] == 0


@pytest.mark.parametrize("std", [(0.2, 0.0, 0.3), 0.0, (0.2, float("nan"), 0.3), (0.2, float("inf"), 1)])
def test_swap_std_must_be_finite_and_non_zero(std):
    a = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    mask = torch.zeros(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="std must be"):
        blockwise_swap_patches(a, a, mask, 4, mean=0.5, std=std, backend="reference")
    with pytest.raises(ValueError, match="std must be"):
        swap_patches_ref(a, a, mask, 4, std=std)
    with pytest.raises(ValueError, match="mean must be finite"):
        blockwise_swap_patches(a, a, mask, 4, mean=float("nan"), backend="reference")


@pytest.mark.parametrize("backend", ["reference"] + (["triton"] if ON_CUDA else []))
def test_swap_takes_numpy_integer_patch_sizes(backend):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8, generator=g).to(DEVICE)
    b = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8, generator=g).to(DEVICE)
    mask = (torch.rand(2, 6, generator=g) > 0.5).to(DEVICE)
    want = blockwise_swap_patches(a, b, mask, 4, backend=backend)
    for p in (np.int64(4), np.int32(4), torch.tensor(4)):
        torch.testing.assert_close(blockwise_swap_patches(a, b, mask, p, backend=backend), want)
    assert patchify(a.float(), np.int64(4)).shape == (2, 6, 48)
    for p, err in ((4.0, TypeError), (True, TypeError), (np.int64(0), ValueError), (-4, ValueError)):
        with pytest.raises(err, match="patch_size"):
            blockwise_swap_patches(a, b, mask, p, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_head_dim_zero_is_a_value_error(backend):
    """d = 0 once reached d ** -0.5: ZeroDivisionError (issue 24)."""
    q = torch.zeros(2, 1, 5, 0, device=DEVICE)
    with pytest.raises(ValueError, match="head dim d = 0"):
        diagonal_micro_attention(q, q, q, backend=backend)
    with pytest.raises(ValueError, match="head dim d = 0"):
        dma_ref(q, q, q)
