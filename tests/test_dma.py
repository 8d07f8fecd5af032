"""Fused DMA (Triton, under the interpreter on CPU) and the chunked torch path against
the reference: forward and all five gradients, odd shapes, PoI masks, fp32 and fp16."""
import subprocess
import sys

import pytest
import torch

from micronbert.kernels import (DiagonalMicroAttention, diagonal_micro_attention, dma_ref,
                                poi_score_masking)
from conftest import DEVICE, triton_or_skip

# (B, H, N, d): every N in {1, 2, 63, 64, 65, 197, 785}, d in {8, 64, 512}, H in {1, 4}
SMALL = [(2, 1, 1, 8), (1, 4, 2, 64), (2, 1, 63, 8), (1, 4, 64, 64), (2, 1, 65, 512),
         (1, 4, 197, 8)]
LARGE = [(1, 1, 197, 512), (1, 4, 785, 64)]
HUGE = (1, 1, 785, 512)  # ~40 s a case under the interpreter: one mask combination
BIASES = ["none", "soft", "inf"]
GATES = ["none", "bn", "bhn"]
DTYPES = [(torch.float32, 1e-4), (torch.float16, 2.0)]  # fp32: rel. error; fp16: x torch's error
NAMES = ["O", "D", "dq", "dk", "dv", "dbias", "dgate", "dnull"]


def make_inputs(b, h, n, d, bias_kind, gate_kind, dtype, seed, null=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    q = q * 2  # sharper softmax, so D is not uniform
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
    do = torch.randn(b, h, n, d, generator=g).to(DEVICE)
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
    def fn(q, k, v, b, g, nl):
        h = q.shape[1]
        b = b.unsqueeze(1).expand(-1, h, -1) if b is not None and b.dim() == 2 else b
        g = g.unsqueeze(1).expand(-1, h, -1) if g is not None and g.dim() == 2 else g
        return dma_ref(q, k, v, b, g, upcast=upcast, null_logit=nl)
    return fn


def compare(shape, bias_kind, gate_kind, dtype, tol, backend, null=False):
    leaves, do, dd = make_inputs(*shape, bias_kind, gate_kind, dtype, seed=hash(
        (shape, bias_kind, gate_kind, str(dtype), null)) % 2**31, null=null)
    exact = run(reference(True), leaves, do, dd, torch.float32)
    got = run(fused(backend), leaves, do, dd, dtype)
    same_dtype = run(reference(False), leaves, do, dd, dtype) if dtype != torch.float32 else None
    for i, name in enumerate(NAMES):
        ref, out = exact[i], got[i]
        if ref is None:
            assert out is None, name
            continue
        out = out.float()
        assert out.shape == ref.shape, name
        assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten or NaN)"
        err = (out - ref).abs().max().item()
        scale = ref.abs().max().item()
        if dtype == torch.float32:
            assert err <= tol * scale + 1e-6, f"{name}: max error {err:.3g} vs scale {scale:.3g}"
        else:
            torch_err = (same_dtype[i].float() - ref).abs().max().item()
            assert err <= tol * torch_err + 2e-3 * scale + 1e-5, \
                f"{name}: fused error {err:.3g} vs torch {dtype} error {torch_err:.3g}"


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("gate_kind", GATES)
@pytest.mark.parametrize("bias_kind", BIASES)
@pytest.mark.parametrize("shape", SMALL, ids=str)
def test_triton_matches_reference(shape, bias_kind, gate_kind, dtype, tol):
    triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, tol, "triton")


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("bias_kind,gate_kind", [("inf", "bhn"), ("soft", "bn"), ("none", "none")])
@pytest.mark.parametrize("shape", LARGE, ids=str)
def test_triton_matches_reference_large(shape, bias_kind, gate_kind, dtype, tol):
    triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, tol, "triton")


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["fp32", "fp16"])
def test_triton_matches_reference_authors_width(dtype, tol):
    triton_or_skip()
    compare(HUGE, "inf", "bhn", dtype, tol, "triton")


@pytest.mark.parametrize("gate_kind", GATES)
@pytest.mark.parametrize("bias_kind", BIASES)
@pytest.mark.parametrize("shape", SMALL + LARGE + [HUGE], ids=str)
def test_torch_chunked_matches_reference(shape, bias_kind, gate_kind):
    compare(shape, bias_kind, gate_kind, torch.float32, 1e-4, "torch")


@pytest.mark.parametrize("backend,dtype,tol", [("torch", torch.float32, 1e-4),
                                               ("triton", torch.float32, 1e-4),
                                               ("triton", torch.float16, 2.0)],
                         ids=["torch-fp32", "triton-fp32", "triton-fp16"])
@pytest.mark.parametrize("bias_kind,gate_kind", [("none", "none"), ("inf", "bhn"), ("soft", "bn")])
@pytest.mark.parametrize("shape", [(2, 1, 63, 8), (1, 4, 65, 64), (2, 1, 197, 512)], ids=str)
def test_null_key_matches_reference(shape, bias_kind, gate_kind, backend, dtype, tol):
    if backend == "triton":
        triton_or_skip()
    compare(shape, bias_kind, gate_kind, dtype, tol, backend, null=True)


def test_null_key_makes_the_diagonal_absolute():
    """Without a null key D only asks whether key i is query i's best match: a patch that
    changed but still matches itself best keeps D near 1. A null key whose logit sits just
    under a perfect match's score lets D fall for the changed patch only."""
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(1, 1, 16, 32, generator=g), dim=-1)
    changed = t.clone()
    changed[0, 0, 5] = torch.nn.functional.normalize(t[0, 0, 5] + 0.3 * torch.randn(32, generator=g), dim=-1)
    beta = 200.0
    assert torch.cosine_similarity(changed[0, 0, 5], t[0, 0], dim=-1).argmax() == 5  # still best
    _, d_rel = diagonal_micro_attention(changed, t, t, scale=beta, return_diag=True, backend="reference")
    assert d_rel.min() > 0.99
    null = torch.full((1, 1, 16), beta * 0.99)  # matches better than cos 0.99 count as matches
    for backend in ("reference", "torch"):
        _, d_abs = diagonal_micro_attention(changed, t, t, scale=beta, return_diag=True,
                                            backend=backend, null_logit=null)
        assert d_abs[0, 0, 5] < 0.01
        assert d_abs[0, 0, torch.arange(16) != 5].min() > 0.8


def test_null_logit_of_minus_infinity_is_no_null_key():
    leaves, do, dd = make_inputs(2, 2, 33, 16, "inf", "bn", torch.float32, 1)
    none = run(fused("torch"), leaves, do, dd, torch.float32)
    leaves[5] = torch.full((2, 2, 33), float("-inf"))
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
    x = [torch.randn(2, 33, 3, 16, generator=g).transpose(1, 2) for _ in range(3)]  # B H N d views
    assert not x[0].is_contiguous()
    ref = dma_ref(*x)[0]
    for backend in ("triton", "torch"):
        torch.testing.assert_close(diagonal_micro_attention(*x, backend=backend), ref,
                                   rtol=1e-4, atol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = (torch.randn(1, 2, 9, 8, requires_grad=True) for _ in range(3))
    bias = torch.full((1, 9), float("-inf"))
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
    m = DiagonalMicroAttention(32, num_heads=4, diagonal=diagonal, poi_mode="soft")
    x = [torch.randn(2, 10, 32) for _ in range(3)]
    s = torch.softmax(torch.randn(2, 10), -1)
    out, diag = m(*x, poi_scores=s)
    b, g = poi_score_masking(s, "soft")
    heads = [t(xx).view(2, 10, 4, 8).transpose(1, 2) for t, xx in zip((m.to_q, m.to_k, m.to_v), x)]
    sc = heads[0] @ heads[1].transpose(-1, -2) / 8 ** 0.5 + b[:, None, None]
    p = sc.softmax(-1)
    o = (p @ heads[2]) if not diagonal else torch.diagonal(p, dim1=-2, dim2=-1)[..., None] * heads[2]
    o = o * g[:, None, :, None]
    torch.testing.assert_close(out, m.proj(o.transpose(1, 2).reshape(2, 10, 32)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(diag, torch.diagonal(p, dim1=-2, dim2=-1), rtol=1e-4, atol=1e-6)
