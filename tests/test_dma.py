"""Fused DMA (Triton: compiled on CUDA, the interpreter on CPU) and the chunked torch path
against the reference: forward and all gradients, odd shapes, PoI masks, fp32, fp16 and
(on CUDA) bf16; bf16 on the CPU's torch paths and large finite biases: test_dma_numerics.py.

Tolerances. fp32: every element within FP32_RTOL of the magnitude of the terms its formula
sums, not of its value: dbias = W - PᵀW, dk = scale (Wq - Pᵀ(Wq)), dq = scale W (k - Pk) and
the <dO, v> inside W cancel, and a result near zero is only as accurate as its terms are
large. fp16/bf16 (flash-attention's rule): the fused error against the exact answer (the
reference in fp64, on the same rounded inputs) at most HALF_FACTOR times the error of the
same-dtype PyTorch reference, plus one rounding step of the largest term: on a GPU the kernels
round W P to fp16/bf16 for the tensor-core dots of dq and dk, which costs up to half a step of
the terms where PyTorch's backward happens to be exact (N = 1: dk = scale (W q - P W q) = 0).
"""
import subprocess
import sys

import pytest
import torch

from micronbert.kernels import (DiagonalMicroAttention, diagonal_micro_attention, dma_ref,
                                poi_score_masking)
from micronbert.kernels.dma import _dma_ref
from conftest import BF16_NEEDS_CUDA, DEVICE, triton_or_skip

# (B, H, N, d): every N in {1, 2, 63, 64, 65, 197, 785}, d in {8, 64, 512}, H in {1, 4}
SMALL = [(2, 1, 1, 8), (1, 4, 2, 64), (2, 1, 63, 8), (1, 4, 64, 64), (2, 1, 65, 512),
         (1, 4, 197, 8)]
LARGE = [(1, 1, 197, 512), (1, 4, 785, 64)]
HUGE = (1, 1, 785, 512)  # ~40 s a case under the interpreter: one mask combination
BIASES = ["none", "soft", "inf"]
GATES = ["none", "bn", "bhn"]
FP32_RTOL = 1e-4  # fp32: error per element / magnitude of its terms
FP32_FLOOR = 1e-7  # ... plus this fraction of the largest term
HALF_FACTOR = 2.0  # fp16/bf16: fused error / same-dtype torch error (flash-attention's rule)
HALF_FLOOR = 1.0  # ... plus this many rounding steps (dtype eps) of the largest term
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16", marks=BF16_NEEDS_CUDA)]
NAMES = ["O", "D", "dq", "dk", "dv", "dbias", "dgate", "dnull"]


def make_inputs(b, h, n, d, bias_kind, gate_kind, dtype, seed, null=False):
    """fp32 leaves (q, k, v, bias, gate, null logit), dO and dD on DEVICE. q, k, v and dO hold
    values of ``dtype``: the fp32 reference sees the very inputs the fused run sees (as in
    flash-attention's tests), so rounding the inputs is nobody's error."""
    g = torch.Generator().manual_seed(seed)
    rounded = lambda t: t.to(dtype).float()  # noqa: E731
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    q = q * 2  # sharper softmax, so D is not uniform
    q, k, v = rounded(q), rounded(k), rounded(v)
    bias = gate = None
    if bias_kind == "soft":
        bias = torch.randn(b, n, generator=g)
    elif bias_kind == "inf":
        bias = torch.randn(b, h, n, generator=g)
        bias[..., ::3] = float("-inf")  # masked keys, hence masked diagonals
        bias[0, 0] = float("-inf")  # every key of (sample 0, head 0) masked
    if gate_kind == "bn":
        gate = torch.rand(b, n, generator=g) * 2
    elif gate_kind == "bhn":
        gate = torch.rand(b, h, n, generator=g) * 2
    # null logits near the diagonal scores, so the null key takes a real share
    nl = (q * k).sum(-1) * d ** -0.5 + torch.randn(b, h, n, generator=g) if null else None
    if nl is not None and bias_kind == "inf":
        nl[-1, -1, ::2] = float("-inf")  # a null key may be masked too
    leaves = [t.to(DEVICE) for t in (q, k, v)] + [t.to(DEVICE) if t is not None else None
                                                  for t in (bias, gate, nl)]
    do = rounded(torch.randn(b, h, n, d, generator=g)).to(DEVICE)
    dd = torch.randn(b, h, n, generator=g).to(DEVICE)
    return leaves, do, dd


def run(fn, leaves, do, dd, dtype):
    xs = [t.detach().clone().to(dtype if i < 3 else torch.float32).requires_grad_(True)
          if t is not None else None for i, t in enumerate(leaves)]
    o, d = fn(*xs)
    ((o.float() * do).sum() + (d * dd).sum()).backward()
    grads = [x.grad if x is not None else None for x in xs]
    return [o, d] + grads


def fused(backend):
    return lambda q, k, v, b, g, nl: diagonal_micro_attention(q, k, v, b, g, return_diag=True,
                                                              backend=backend, null_logit=nl)


def reference(upcast):
    """The reference on (B, N) or (B, H, N) PoI tensors; ``upcast="fp64"``: the spec run in
    fp64 (the exact answer the fp16/bf16 rule measures errors against)."""
    def fn(q, k, v, b, g, nl):
        h = q.shape[1]
        b = b.unsqueeze(1).expand(-1, h, -1) if b is not None and b.dim() == 2 else b
        g = g.unsqueeze(1).expand(-1, h, -1) if g is not None and g.dim() == 2 else g
        if upcast == "fp64":
            return _dma_ref(q, k, v, b, g, None, null_logit=nl)
        return dma_ref(q, k, v, b, g, upcast=upcast, null_logit=nl)
    return fn


def term_scales(leaves, do, dd):
    """For each of NAMES, the elementwise magnitude of the terms its formula sums (fp32;
    None where the output is None): what an fp32 rounding error is proportional to, where
    the value itself may cancel to near zero. With W = (g<dO, v> + dD) D, and the sum inside
    <dO, v> cancelling too, Wt = D (|g| <|dO|, |v|> + |dD|) bounds W's terms."""
    q, k, v, bias, gate, nl = (t.float() if t is not None else None for t in leaves)
    b, h, n, dim = q.shape
    scale = dim ** -0.5
    per_head = lambda x: x.unsqueeze(1).expand(-1, h, -1) if x.dim() == 2 else x  # noqa: E731
    heads_summed = lambda t, x: t.sum(1) if x.dim() == 2 else t  # noqa: E731 (B, N) inputs
    s = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        s = s + per_head(bias).unsqueeze(-2)
    if nl is not None:
        s = torch.cat([s, nl.unsqueeze(-1)], dim=-1)
    dead = torch.isneginf(s).all(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    p, p_null = p[..., :n], p[..., n:].sum(-1)
    pt = p.transpose(-2, -1)
    dg = torch.diagonal(p, dim1=-2, dim2=-1)
    g = per_head(gate).abs() if gate is not None else torch.ones_like(dg)
    dov = (do.abs() * v.abs()).sum(-1)  # the terms of <dO_i, v_i>
    wt = dg * (g * dov + dd.abs())
    wq = wt.unsqueeze(-1) * q.abs()
    return [(g * dg).unsqueeze(-1) * v.abs(),  # O = g D v
            dg,  # D
            scale * wt.unsqueeze(-1) * (k.abs() + p @ k.abs()),  # dq = scale W (k - P k)
            scale * (wq + pt @ wq),  # dk = scale (W q - Pᵀ(W q))
            (g * dg).unsqueeze(-1) * do.abs(),  # dv = g D dO
            heads_summed(wt + (pt @ wt.unsqueeze(-1)).squeeze(-1), bias)  # db = W - PᵀW
            if bias is not None else None,
            heads_summed(dg * dov, gate) if gate is not None else None,  # dg = D <dO, v>
            wt * p_null if nl is not None else None]  # dnull = -W P_null


def error_ratios(exact, got, same_dtype, terms, dtype):
    """{name: (error / allowed error, what went wrong if over 1)} for each output present.
    Batch slices of the arguments give the ratios of those samples alone."""
    ratios = {}
    for i, name in enumerate(NAMES):
        if exact[i] is None:
            continue
        ref, out, t = exact[i], got[i].float(), terms[i]
        t_max = t.max().item()
        if dtype == torch.float32:  # every element, against its own terms
            r = (out - ref).abs() / (FP32_RTOL * t + FP32_FLOOR * t_max).clamp_min(1e-30)
            w = r.flatten().argmax()
            ratios[name] = (r.max().item(), (
                f"{name}: error {(out - ref).abs().flatten()[w].item():.3g} where its terms are "
                f"{t.flatten()[w].item():.3g} (value {ref.flatten()[w].item():.3g})"))
        else:  # flash-attention's rule on the largest errors
            err = (out - ref).abs().max().item()
            torch_err = (same_dtype[i].float() - ref).abs().max().item()
            allowed = HALF_FACTOR * torch_err + HALF_FLOOR * torch.finfo(dtype).eps * t_max
            ratios[name] = (err / max(allowed, 1e-30), (
                f"{name}: fused error {err:.3g} vs torch {dtype} error {torch_err:.3g} (terms "
                f"up to {t_max:.3g})"))
    return ratios


def outputs(leaves, do, dd, dtype, backend):
    """(exact reference: fp32, fp64 for fp16/bf16; ``backend`` in ``dtype``; same-dtype
    reference or None; term scales)."""
    exact = (run(reference(True), leaves, do, dd, torch.float32) if dtype == torch.float32
             else run(reference("fp64"), leaves, do, dd, torch.float64))
    got = run(fused(backend), leaves, do, dd, dtype)
    same_dtype = run(reference(False), leaves, do, dd, dtype) if dtype != torch.float32 else None
    return exact, got, same_dtype, term_scales(leaves, do, dd)


def compare(shape, bias_kind, gate_kind, dtype, backend, seed, null=False):
    leaves, do, dd = make_inputs(*shape, bias_kind, gate_kind, dtype, seed=seed, null=null)
    exact, got, same_dtype, terms = outputs(leaves, do, dd, dtype, backend)
    for name, ref, out in zip(NAMES, exact, got):
        if ref is None:
            assert out is None, name
            continue
        assert out.dtype == (dtype if name in ("O", "dq", "dk", "dv") else torch.float32), name
        assert out.shape == ref.shape, name
        assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten or NaN)"
    for ratio, why in error_ratios(exact, got, same_dtype, terms, dtype).values():
        assert ratio <= 1, why


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate_kind", GATES)
@pytest.mark.parametrize("bias_kind", BIASES)
@pytest.mark.parametrize("shape", SMALL, ids=str)
def test_triton_matches_reference(shape, bias_kind, gate_kind, dtype, seed):
    triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, "triton", seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_kind,gate_kind", [("inf", "bhn"), ("soft", "bn"), ("none", "none")])
@pytest.mark.parametrize("shape", LARGE, ids=str)
def test_triton_matches_reference_large(shape, bias_kind, gate_kind, dtype, seed):
    triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, "triton", seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_matches_reference_authors_width(dtype, seed):
    triton_or_skip()
    compare(HUGE, "inf", "bhn", dtype, "triton", seed)


# the padded head dims of the shipped launch table that SMALL (16, 64, 512) leaves out: 32,
# 128, 256; odd N, masked keys and rows, per-head gate, null key and dD all at once
OTHER_HEAD_DIMS = [(1, 2, 37, 20), (1, 1, 37, 100), (2, 1, 21, 200)]


@pytest.mark.parametrize("shape", OTHER_HEAD_DIMS, ids=str)
def test_triton_matches_reference_every_shipped_head_dim(shape, seed):
    triton_or_skip()
    compare(shape, "inf", "bhn", torch.float32, "triton", seed, null=True)


def test_fused_forward_saves_e_only_when_autograd_records(monkeypatch):
    """E = k - P k (one more N^2 d GEMM) is computed for a backward only: not for inference."""
    triton_or_skip()
    from micronbert.kernels import dma_triton
    seen, real = [], dma_triton.dma_fwd
    monkeypatch.setattr(dma_triton, "dma_fwd",
                        lambda *a, **kw: seen.append(kw["save_e"]) or real(*a, **kw))
    q = torch.randn(1, 1, 9, 8, device=DEVICE)
    qg = q.clone().requires_grad_(True)
    diagonal_micro_attention(q, q, q, backend="triton")
    diagonal_micro_attention(qg, q, q, backend="triton").sum().backward()
    with torch.no_grad():
        diagonal_micro_attention(qg, q, q, backend="triton")
    assert seen == [False, True, False]
    assert torch.isfinite(qg.grad).all()


@pytest.mark.parametrize("gate_kind", GATES)
@pytest.mark.parametrize("bias_kind", BIASES)
@pytest.mark.parametrize("shape", SMALL + LARGE + [HUGE], ids=str)
def test_torch_chunked_matches_reference(shape, bias_kind, gate_kind, seed):
    compare(shape, bias_kind, gate_kind, torch.float32, "torch", seed)


@pytest.mark.parametrize("backend,dtype", [
    ("torch", torch.float32), ("triton", torch.float32), ("triton", torch.float16),
    pytest.param("triton", torch.bfloat16, marks=BF16_NEEDS_CUDA)],
    ids=["torch-fp32", "triton-fp32", "triton-fp16", "triton-bf16"])
@pytest.mark.parametrize("bias_kind,gate_kind", [("none", "none"), ("inf", "bhn"), ("soft", "bn")])
@pytest.mark.parametrize("shape", [(2, 1, 63, 8), (1, 4, 65, 64), (2, 1, 197, 512)], ids=str)
def test_null_key_matches_reference(shape, bias_kind, gate_kind, backend, dtype, seed):
    if backend == "triton":
        triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, backend, seed, null=True)


def test_null_key_makes_the_diagonal_absolute():
    """Without a null key D only asks whether key i is query i's best match: a patch that
    changed but still matches itself best keeps D near 1. A null key whose logit sits just
    under a perfect match's score lets D fall for the changed patch only."""
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(1, 1, 16, 32, generator=g), dim=-1)
    changed = t.clone()
    changed[0, 0, 5] = torch.nn.functional.normalize(t[0, 0, 5] + 0.3 * torch.randn(32, generator=g), dim=-1)
    t, changed = t.to(DEVICE), changed.to(DEVICE)
    beta = 200.0
    assert torch.cosine_similarity(changed[0, 0, 5], t[0, 0], dim=-1).argmax() == 5  # still best
    _, d_rel = diagonal_micro_attention(changed, t, t, scale=beta, return_diag=True, backend="reference")
    assert d_rel.min() > 0.99
    null = torch.full((1, 1, 16), beta * 0.99, device=DEVICE)  # matches better than cos 0.99 count as matches
    for backend in ("reference", "torch"):
        _, d_abs = diagonal_micro_attention(changed, t, t, scale=beta, return_diag=True,
                                            backend=backend, null_logit=null)
        assert d_abs[0, 0, 5] < 0.01
        assert d_abs[0, 0, torch.arange(16, device=DEVICE) != 5].min() > 0.8


def test_null_logit_of_minus_infinity_is_no_null_key():
    leaves, do, dd = make_inputs(2, 2, 33, 16, "inf", "bn", torch.float32, 1)
    none = run(fused("torch"), leaves, do, dd, torch.float32)
    leaves[5] = torch.full((2, 2, 33), float("-inf"), device=DEVICE)
    minus_inf = run(fused("torch"), leaves, do, dd, torch.float32)
    for a, b in zip(none[:7], minus_inf[:7]):
        torch.testing.assert_close(a, b) if a is not None else None
    assert (minus_inf[7] == 0).all()


def test_chunk_size_does_not_matter():
    leaves, do, dd = make_inputs(2, 2, 77, 16, "inf", "bhn", torch.float32, 0)
    outs = [run(lambda q, k, v, b, g, nl, c=c: diagonal_micro_attention(
        q, k, v, b, g, return_diag=True, backend="torch", chunk=c), leaves, do, dd, torch.float32)
        for c in (1, 10, 77)]
    for a, b in zip(outs[0], outs[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(outs[1], outs[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_non_contiguous_inputs():
    triton_or_skip()
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(2, 33, 3, 16, generator=g).to(DEVICE).transpose(1, 2)  # B H N d views
         for _ in range(3)]
    assert not x[0].is_contiguous()
    ref = dma_ref(*x)[0]
    for backend in ("triton", "torch"):
        torch.testing.assert_close(diagonal_micro_attention(*x, backend=backend), ref,
                                   rtol=1e-4, atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = (torch.randn(1, 2, 9, 8, device=DEVICE, requires_grad=True) for _ in range(3))
    bias = torch.full((1, 9), float("-inf"), device=DEVICE)
    for backend in ("reference", "torch", "triton"):
        o, d = diagonal_micro_attention(q, k, v, bias, return_diag=True, backend=backend)
        assert (o == 0).all() and (d == 0).all()
        o.sum().backward()
        for t in (q, k, v):
            assert (t.grad == 0).all(), backend
            t.grad = None


def test_bad_inputs_have_clear_errors():
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="same shape"):
        diagonal_micro_attention(q, q, torch.randn(1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"\(B, H, N, d\)"):
        diagonal_micro_attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="key_bias"):
        diagonal_micro_attention(q, q, q, key_bias=torch.zeros(1, 5))
    with pytest.raises(TypeError, match="fp32, fp16 or bf16"):
        diagonal_micro_attention(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="backend"):
        diagonal_micro_attention(q, q, q, backend="cuda")


def test_triton_on_cpu_without_interpreter_says_why():
    code = ("import torch; from micronbert.kernels import diagonal_micro_attention as f\n"
            "q = torch.randn(1, 1, 4, 8)\n"
            "try:\n    f(q, q, q, backend='triton')\nexcept RuntimeError as e:\n    print(e)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "cannot run" in out.stdout and ("CUDA" in out.stdout or "triton" in out.stdout), out


def test_poi_score_masking():
    s = torch.softmax(torch.randn(3, 20), -1)
    bias, gate = poi_score_masking(s, "gate")
    assert bias is None
    torch.testing.assert_close(gate.mean(-1), torch.ones(3))
    bias, gate = poi_score_masking(s, "soft")
    torch.testing.assert_close(bias, torch.log(20 * s))
    bias, _ = poi_score_masking(s, "hard", quantile=0.25)
    masked = torch.isneginf(bias)
    assert (masked.sum(-1) == 5).all()  # the 5 lowest of 20
    assert (s[masked].max() <= s[~masked].view(3, -1).min(-1).values.max())
    assert poi_score_masking(s, "none") == (None, None)


@pytest.mark.parametrize("diagonal", [True, False])
def test_module_matches_functional(diagonal):
    torch.manual_seed(0)
    m = DiagonalMicroAttention(32, num_heads=4, diagonal=diagonal, poi_mode="soft").to(DEVICE)
    x = [torch.randn(2, 10, 32, device=DEVICE) for _ in range(3)]
    s = torch.softmax(torch.randn(2, 10, device=DEVICE), -1)
    out, diag = m(*x, poi_scores=s)
    b, g = poi_score_masking(s, "soft")
    heads = [t(xx).view(2, 10, 4, 8).transpose(1, 2) for t, xx in zip((m.to_q, m.to_k, m.to_v), x)]
    sc = heads[0] @ heads[1].transpose(-1, -2) / 8 ** 0.5 + b[:, None, None]
    p = sc.softmax(-1)
    o = (p @ heads[2]) if not diagonal else torch.diagonal(p, dim1=-2, dim2=-1)[..., None] * heads[2]
    o = o * g[:, None, :, None]
    torch.testing.assert_close(out, m.proj(o.transpose(1, 2).reshape(2, 10, 32)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(diag, torch.diagonal(p, dim1=-2, dim2=-1), rtol=1e-4, atol=1e-6)
