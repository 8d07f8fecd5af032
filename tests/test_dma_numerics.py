"""DMA numerics beyond test_dma.py: large finite key biases on every path (issue 24), and bf16
on the CPU's torch paths (issue 23), both forward and backward against an exact answer.

Large finite biases. Softmax is shift-invariant and only -inf masks a key: a row whose keys all
carry -1e9 (``masked_fill(-1e9)``) has the D of no bias, a constant 1e6 offset changes nothing.
Each path runs on the large bias and is held, with test_dma's fp32 rule, to the reference run
on the same problem written small (the offset taken out exactly; -1e9 beside larger biases is a
key whose weight exp(-1e9) is zero, i.e. -inf).

bf16 on the CPU. The chunked path keeps test_dma's rule (error against the fp64 reference at
most twice the bf16 reference's); the bf16 reference *is* the same-dtype PyTorch computation, so
it is held to REF_BF16_STEPS rounding steps (bf16 eps) of each output's largest term instead.
"""
import pytest
import torch

from conftest import DEVICE, triton_or_skip
from test_dma import (NAMES, SMALL, compare, error_ratios, fused, make_inputs, outputs, reference,
                      run, term_scales)

PATHS = ["reference", "torch", "triton"]
REF_BF16_STEPS = 8.0  # measured worst over SMALL and two odd head dims, all masks: 5.5 (D)


def big_and_small_biases(b, h, n, kind, seed):
    """(large finite bias, the same problem written small, the offset between them (B, H, 1)):
    f(big, null) = f(small, null - offset). fp32 on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randn(b, h, n, generator=g)
    off = torch.zeros(b, h, 1)
    if kind == "const_1e6":  # a constant offset on every key of every row
        off += 1e6
        big = small + 1e6  # rounded to fp32 (steps of 1/16): the small one is read back exactly
        small = big - 1e6
    else:  # "minus_1e9": masked_fill(-1e9) on whole rows and on some keys
        big = small.clone()
        big[0, 0], small[0, 0], off[0, 0] = -1e9, 0.0, -1e9  # every key of one row
        big[-1, -1, ::3] = -1e9  # some keys beside finite ones: masked
        small[-1, -1, ::3] = float("-inf")
        big[0, -1], small[0, -1] = float("-inf"), float("-inf")  # -inf and -1e9 on one row:
        big[0, -1, 1::4], small[0, -1, 1::4], off[0, -1] = -1e9, 0.0, -1e9  # -1e9 is live
    return big.to(DEVICE), small.to(DEVICE), off.to(DEVICE)


@pytest.mark.parametrize("null", [False, True], ids=["no-null", "null"])
@pytest.mark.parametrize("kind", ["minus_1e9", "const_1e6"])
@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("shape", [(2, 2, 13, 8), (2, 3, 33, 16)], ids=str)
def test_large_finite_bias_is_a_bias_on_every_path(shape, backend, kind, null, seed):
    if backend == "triton":
        triton_or_skip()
    leaves, do, dd = make_inputs(*shape, "none", "bhn", torch.float32, seed, null=null)
    big, small, off = big_and_small_biases(*shape[:3], kind, seed)
    small_leaves = leaves[:3] + [small, leaves[4], leaves[5] - off if null else None]
    exact = run(reference(True), small_leaves, do, dd, torch.float32)
    got = run(fused(backend), leaves[:3] + [big] + leaves[4:], do, dd, torch.float32)
    for name, e, o in zip(NAMES, exact, got):
        assert (e is None) == (o is None) and (o is None or torch.isfinite(o).all()), name
    terms = term_scales(small_leaves, do, dd)
    for ratio, why in error_ratios(exact, got, None, terms, torch.float32).values():
        assert ratio <= 1, f"{backend} {kind}: {why}"
    if kind == "minus_1e9" and not null:  # the whole -1e9 row is the unbiased row
        free = fused(backend)(*leaves[:3], torch.zeros_like(big), *leaves[4:])[1]
        torch.testing.assert_close(got[1][0, 0], free[0, 0], rtol=1e-5, atol=1e-6)
        d_row = got[1][0, 0].detach()  # neither 1/N (uniform: was the reference) nor 1 (fused)
        assert (d_row - 1 / shape[2]).abs().max() > 1e-3 and (d_row < 0.9).all()
    if kind == "minus_1e9" and null:  # against a finite null key, keys at -1e9 match nothing
        assert (got[1][0, 0] == 0).all()


BF16_CASES = [("none", "none"), ("inf", "bhn"), ("soft", "bn")]


@pytest.mark.parametrize("null", [False, True], ids=["no-null", "null"])
@pytest.mark.parametrize("bias_kind,gate_kind", BF16_CASES)
@pytest.mark.parametrize("shape", SMALL, ids=str)
def test_chunked_torch_path_bf16_matches_fp64(shape, bias_kind, gate_kind, null, seed):
    compare(shape, bias_kind, gate_kind, torch.bfloat16, "torch", seed, null=null)


@pytest.mark.parametrize("bias_kind,gate_kind", BF16_CASES)
@pytest.mark.parametrize("shape", SMALL + [(1, 2, 37, 20)], ids=str)
def test_reference_path_bf16_within_rounding_of_fp64(shape, bias_kind, gate_kind, seed):
    leaves, do, dd = make_inputs(*shape, bias_kind, gate_kind, torch.bfloat16, seed, null=True)
    exact, _, same, terms = outputs(leaves, do, dd, torch.bfloat16, "reference")
    got = run(fused("reference"), leaves, do, dd, torch.bfloat16)
    eps = torch.finfo(torch.bfloat16).eps
    for name, e, s, o, t in zip(NAMES, exact, same, got, terms):
        if e is None:
            continue
        assert o.dtype == (torch.bfloat16 if name in ("O", "dq", "dk", "dv") else torch.float32)
        torch.testing.assert_close(o, s, rtol=0, atol=0)  # the backend is dma_ref in bf16
        err = (o.float() - e).abs().max().item()
        assert err <= REF_BF16_STEPS * eps * t.max().item() + 1e-30, \
            f"{name}: bf16 reference error {err:.3g}, terms up to {t.max().item():.3g}"
