import pytest
import torch

from micronbert.kernels import (blockwise_swap_patches, patchify, random_swap_mask, swap_tokens,
                                unpatchify)
from conftest import triton_or_skip

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def loop_swap(a, b, mask, p):
    """The authors' route: a per-sample loop over the swapped patches."""
    pa, pb = patchify(a, p).clone(), patchify(b, p)
    for i in range(a.shape[0]):
        idx = mask[i].nonzero().squeeze(-1)
        pa[i][idx] = pb[i][idx]
    return pa


def frames(b, h, w, dtype, seed=0, c=3):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return [torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8) for _ in range(2)]
    return [torch.randn(b, c, h, w, generator=g).to(dtype) for _ in range(2)]


def test_patchify_round_trip_and_conv_equivalence():
    x = torch.randn(2, 3, 16, 24)
    p = patchify(x, 8)
    assert p.shape == (2, 6, 192)
    torch.testing.assert_close(unpatchify(p, 8, (2, 3)), x)
    conv = torch.nn.Conv2d(3, 5, 8, 8)
    ref = conv(x).flatten(2).transpose(1, 2)
    lin = torch.nn.functional.linear(p, conv.weight.permute(0, 2, 3, 1).flatten(1), conv.bias)
    torch.testing.assert_close(lin, ref, rtol=1e-5, atol=1e-5)


def test_reference_equals_per_sample_loop():
    a, b = frames(3, 16, 24, torch.float32)
    mask = random_swap_mask(3, (2, 3), 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(blockwise_swap_patches(a, b, mask, 8, backend="reference"),
                               loop_swap(a, b, mask, 8))


@pytest.mark.parametrize("shape", [(1, 16, 16, 8), (3, 24, 40, 8), (2, 56, 56, 8), (2, 32, 48, 16),
                                   (1, 12, 18, 6)])
@pytest.mark.parametrize("mask_kind", ["random", "zeros", "ones"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_triton_uint8_to_fp32_exact(shape, mask_kind, channels_last):
    triton_or_skip()
    b, h, w, p = shape
    a, bb = frames(b, h, w, torch.uint8, seed=h * w)
    n = (h // p) * (w // p)
    mask = {"random": random_swap_mask(b, (h // p, w // p), 0.5, torch.Generator().manual_seed(1)),
            "zeros": torch.zeros(b, n, dtype=torch.bool),
            "ones": torch.ones(b, n, dtype=torch.bool)}[mask_kind]
    if channels_last:
        a, bb = a.permute(0, 2, 3, 1).contiguous(), bb.permute(0, 2, 3, 1).contiguous()
    kw = dict(mean=MEAN, std=STD, return_target=True, return_other=True, channels_last=channels_last)
    got = blockwise_swap_patches(a, bb, mask, p, backend="triton", **kw)
    ref = blockwise_swap_patches(a, bb, mask, p, backend="reference", **kw)
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32 and g.shape == (b, n, p * p * 3)
        torch.testing.assert_close(g, r, rtol=0, atol=0)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_triton_half_outputs_within_rounding(out_dtype):
    triton_or_skip()
    a, b = frames(2, 24, 32, torch.uint8)
    mask = random_swap_mask(2, (3, 4), 0.5, torch.Generator().manual_seed(2))
    got = blockwise_swap_patches(a, b, mask, 8, MEAN, STD, out_dtype=out_dtype, backend="triton")
    ref = blockwise_swap_patches(a, b, mask, 8, MEAN, STD, backend="reference")
    assert got.dtype == out_dtype
    eps = torch.finfo(out_dtype).eps
    assert ((got.float() - ref).abs() <= eps * ref.abs() + 1e-6).all()


def test_triton_float_input_swapped_only():
    triton_or_skip()
    a, b = frames(2, 16, 16, torch.float32)
    mask = random_swap_mask(2, 2, 0.5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(blockwise_swap_patches(a, b, mask, 8, backend="triton"),
                               loop_swap(a, b, mask, 8), rtol=0, atol=0)


def test_bad_inputs():
    a, b = frames(2, 16, 16, torch.uint8)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="differ"):
        blockwise_swap_patches(a, b[:, :, :8], mask, 8)
    with pytest.raises(ValueError, match="not divisible"):
        blockwise_swap_patches(a, b, mask, 5)
    with pytest.raises(ValueError, match=r"mask must have shape"):
        blockwise_swap_patches(a, b, mask[:, :3], 8)
    with pytest.raises(TypeError, match="bool"):
        blockwise_swap_patches(a, b, mask.float(), 8)
    with pytest.raises(ValueError, match="one value per channel"):
        blockwise_swap_patches(a, b, mask, 8, mean=(0.1, 0.2))


def test_swap_tokens_forward_and_grad():
    xa = torch.randn(3, 7, 5, requires_grad=True)
    xb = torch.randn(3, 7, 5, requires_grad=True)
    mask = torch.rand(3, 7) > 0.5
    y = swap_tokens(xa, xb, mask)
    torch.testing.assert_close(y, torch.where(mask[..., None], xb, xa))
    w = torch.randn_like(y)
    (y * w).sum().backward()
    torch.testing.assert_close(xa.grad, w * ~mask[..., None])
    torch.testing.assert_close(xb.grad, w * mask[..., None])
    with pytest.raises(ValueError, match="mask"):
        swap_tokens(xa, xb, mask[:, :3])
