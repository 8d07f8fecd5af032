"""Diagonal Micro-Attention (DMA), docs/method.md §3, docs/kernels.md.

Per (batch, head), with scores ``s_ij = scale*<q_i, k_j> + b_j``:

    lse_i = log sum_j exp(s_ij)        (+ exp(n_i) with a null key)
    D_i   = exp(s_ii - lse_i)          # the diagonal of softmax_j(s_ij)
    O_i   = g_i * D_i * v_i

``b`` (key bias, may hold -inf) and ``g`` (query gate) carry the Patch-of-Interest
score masking; without PoI ``b = 0`` and ``g = 1``. Only ``-inf`` masks a key: a row whose keys
are all ``-inf`` gives ``D = 0``, ``O = 0`` and zero gradients. Any finite bias is a bias:
softmax is shift-invariant, so every path first subtracts each row's largest finite bias
from ``b`` (and from ``n``): a bias of -1e9 on every key (a ``masked_fill(-1e9)`` habit) or a
constant 1e6 gives the D of no bias, alike on every path and size.

Optional null key (an extension, not in the paper): a per-row logit ``n_i`` joins the
softmax's denominator as one more key that has no value. Without it D is a *relative*
test (is key i the best match of query i among all keys?), so a patch that changed but
still matches itself best keeps D near 1; with it D can say "matches nothing well".

Backward, with ``G_i = g_i*<dO_i, v_i> + dD_i`` and ``W_i = G_i*D_i``:

    dq_i = scale * W_i * (k_i - sum_j P_ij k_j)
    dk_j = scale * (W_j q_j - sum_i W_i P_ij q_i)
    db_j = W_j - sum_i W_i P_ij
    dv_i = g_i D_i dO_i,     dg_i = D_i <dO_i, v_i>
    dn_i = -W_i * exp(n_i - lse_i)

Backends (``backend=``):
  * ``reference``: ``dma_ref``, the readable spec; builds the N x N matrix.
  * ``torch``: chunked PyTorch, O(N * chunk) memory, exact custom backward.
  * ``triton``: fused kernels (``_dma_fwd``, ``_dma_bwd_rows``, ``_dma_bwd_dk``);
    on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``. When autograd will
    need a backward the forward also saves ``E = k - P k`` (B, H, N, d), so that
    ``dq = scale W E`` and the backward computes the scores once (dma_triton.py).
  * ``auto``: ``triton`` on CUDA when it can run; on the CPU ``reference`` while its
    N x N scores are small (it is the faster there), else ``torch`` (kernels/backend.py).
"""
from __future__ import annotations

import importlib
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backend import (BACKENDS, check_backend, positive_int, resolve_backend,  # noqa: F401
                      triton_unavailable_reason)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 512


# --------------------------------------------------------------------------
# Reference: the spec, exact, O(N^2) memory
# --------------------------------------------------------------------------
def dma_ref(q, k, v, key_bias=None, query_gate=None, scale=None, upcast=False, null_logit=None):
    """Readable DMA: full attention matrix, then its diagonal.

    Args:
        q, k, v: (B, H, N, d). key_bias, query_gate, null_logit: (B, N), (B, H, N) or None,
            checked as ``diagonal_micro_attention`` checks them.
        scale: defaults to d**-0.5. upcast: compute in fp32 (the accuracy
            reference for fp16/bf16 tests); otherwise in the inputs' dtype.
    Returns:
        O (B, H, N, d) in q's dtype (fp32 if upcast), D (B, H, N) fp32.
    """
    key_bias, query_gate, null_logit = _check_inputs(q, k, v, key_bias, query_gate, null_logit)
    return _dma_ref(q, k, v, key_bias, query_gate, scale, upcast, null_logit)


def _shift_bias(bias, null):
    """Subtract each (B, H) row's largest finite key bias from the bias and the null logit.

    Softmax over keys (and the null key) is unchanged by a common shift, so D, O and every
    gradient are too; the shift only keeps a large finite bias from swamping the scores'
    precision. A row with no finite bias is not shifted. The shift is a constant (detached).
    """
    if bias is None or bias.shape[-1] == 0:
        return bias, null
    top = bias.detach().amax(-1, keepdim=True)  # -inf only when every key is masked
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return bias - top, (null - top if null is not None else None)


def _dma_ref(q, k, v, key_bias, query_gate, scale, upcast=False, null_logit=None):
    """``dma_ref`` on checked inputs (bias, gate, null: (B, H, N) fp32 or None)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    key_bias, null_logit = _shift_bias(key_bias, null_logit)  # softmax is shift-invariant
    dtype = torch.float32 if upcast else q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    n = q.shape[-2]
    s = (q @ k.transpose(-2, -1)) * scale  # B H N N
    if key_bias is not None:
        s = s + key_bias.to(dtype).unsqueeze(-2)
    if null_logit is not None:  # the null key: one more column, no value
        s = torch.cat([s, null_logit.to(dtype).unsqueeze(-1)], dim=-1)  # B H N N+1
    dead = torch.isneginf(s).all(-1, keepdim=True)  # rows with every key masked
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1)[..., :n]
    d = torch.diagonal(p, dim1=-2, dim2=-1).masked_fill(dead.squeeze(-1), 0.0)
    w = d if query_gate is None else d * query_gate.to(dtype)
    return w.unsqueeze(-1) * v, d.float()


# --------------------------------------------------------------------------
# Chunked PyTorch path: rows in chunks, O(N * chunk) memory, exact backward
# --------------------------------------------------------------------------
def _safe_lse(lse):
    """lse with -inf (all keys masked) replaced by +inf, so exp(s - lse) = 0."""
    return torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse)


def _scores(q, k, bias, scale, rows):
    s = (q[:, :, rows] @ k.transpose(-2, -1)) * scale  # B H c N
    return s + bias.unsqueeze(-2) if bias is not None else s


def _dma_torch_fwd(q, k, v, bias, gate, scale, chunk, null=None):
    qf, kf = q.float(), k.float()
    n = q.shape[2]
    lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
    for i in range(0, n, chunk):
        rows = slice(i, min(i + chunk, n))
        lse[:, :, rows] = torch.logsumexp(_scores(qf, kf, bias, scale, rows), dim=-1)
    if null is not None:
        lse = torch.logaddexp(lse, null)
    s_diag = (qf * kf).sum(-1) * scale
    if bias is not None:
        s_diag = s_diag + bias
    d = torch.exp(s_diag - _safe_lse(lse))
    w = d if gate is None else d * gate
    return (w.unsqueeze(-1) * v.float()).to(q.dtype), d, lse


def _dma_torch_bwd(q, k, v, bias, gate, scale, lse, d, do, dd, chunk):
    qf, kf, vf, dof = q.float(), k.float(), v.float(), do.float()
    n = q.shape[2]
    dov = (dof * vf).sum(-1)  # <dO_i, v_i>
    g = (dov if gate is None else gate * dov) + (dd if dd is not None else 0.0)
    w = g * d  # W_i
    lse = _safe_lse(lse)
    pk = torch.empty_like(qf)  # sum_j P_ij k_j
    wpq = torch.zeros_like(kf)  # sum_i W_i P_ij q_i
    wp = torch.zeros_like(lse)  # sum_i W_i P_ij
    for i in range(0, n, chunk):
        rows = slice(i, min(i + chunk, n))
        p = torch.exp(_scores(qf, kf, bias, scale, rows) - lse[:, :, rows, None])
        pk[:, :, rows] = p @ kf
        wp_rows = p * w[:, :, rows, None]  # W_i P_ij
        wpq += wp_rows.transpose(-2, -1) @ qf[:, :, rows]
        wp += wp_rows.sum(-2)
    dq = scale * w.unsqueeze(-1) * (kf - pk)
    dk = scale * (w.unsqueeze(-1) * qf - wpq)
    dv = (d if gate is None else gate * d).unsqueeze(-1) * dof
    db = (w - wp) if bias is not None else None
    dg = (d * dov) if gate is not None else None
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), db, dg, w


# --------------------------------------------------------------------------
# The fused paths as PyTorch custom operators, called alike in eager mode and under
# torch.compile (compiled graphs and CUDA graphs take them without breaks):
# micronbert::dma_fwd / micronbert::dma_bwd, with a fake (meta) implementation and the exact
# backward registered as their autograd. They are registered once per process: kernels/ is
# only ever imported as micronbert.kernels (see kernels/__init__.py).
# backend "triton": the Triton kernels; "torch": the chunked PyTorch path.
# --------------------------------------------------------------------------
@torch.library.custom_op("micronbert::dma_fwd", mutates_args=())
def _dma_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                gate: Optional[torch.Tensor], null: Optional[torch.Tensor], scale: float, backend: str,
                chunk: int, save_e: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns O, D, lse and E = k - P k (triton with ``save_e``: for the backward; else empty)."""
    if backend == "triton":
        return _triton_impl().dma_fwd(q, k, v, bias, gate, scale, null, save_e=save_e)
    return _dma_torch_fwd(q, k, v, bias, gate, scale, chunk, null) + (q.new_empty(0),)


@_dma_fwd_op.register_fake
def _(q, k, v, bias, gate, null, scale, backend, chunk, save_e=False):
    b, h, n, _ = q.shape
    return (q.new_empty(q.shape), q.new_empty((b, h, n), dtype=torch.float32),
            q.new_empty((b, h, n), dtype=torch.float32),
            q.new_empty(q.shape if backend == "triton" and save_e else (0,)))


@torch.library.custom_op("micronbert::dma_bwd", mutates_args=())
def _dma_bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                gate: Optional[torch.Tensor], null: Optional[torch.Tensor], lse: torch.Tensor,
                d: torch.Tensor, e: torch.Tensor, do: torch.Tensor, dd: Optional[torch.Tensor], scale: float,
                backend: str, chunk: int
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor]:
    """Returns dq, dk, dv, dbias, dgate, dnull; the last three are empty when their input
    is None. The null key needs nothing new from the kernels: their P = exp(s - lse) already
    uses the lse that includes it."""
    if backend == "triton":
        dq, dk, dv, db, dg, w = _triton_impl().dma_bwd(q, k, v, bias, gate, scale=scale, lse=lse,
                                                       d=d, e=e, do=do, dd=dd)
    else:
        dq, dk, dv, db, dg, w = _dma_torch_bwd(q, k, v, bias, gate, scale, lse, d, do, dd, chunk)
    dn = -w * torch.exp(null - _safe_lse(lse)) if null is not None else None  # dn_i = -W_i P_i,null
    return tuple(lse.new_empty(0) if t is None else t for t in (dq, dk, dv, db, dg, dn))


@_dma_bwd_op.register_fake
def _(q, k, v, bias, gate, null, lse, d, e, do, dd, scale, backend, chunk):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            lse.new_empty(lse.shape if bias is not None else (0,)),
            lse.new_empty(lse.shape if gate is not None else (0,)),
            lse.new_empty(lse.shape if null is not None else (0,)))


def _dma_setup_context(ctx, inputs, output):
    q, k, v, bias, gate, null, scale, backend, chunk = inputs[:9]
    _, d, lse, e = output
    ctx.save_for_backward(q, k, v, bias, gate, null, lse, d, e)
    ctx.scale, ctx.backend, ctx.chunk = scale, backend, chunk


def _dma_backward(ctx, do, dd, _dlse, _de):
    q, k, v, bias, gate, null, lse, d, e = ctx.saved_tensors
    # create_graph=True runs this with grad enabled: the gradient would silently have no graph
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (do, dd, q, k, v, bias, gate, null)):
        raise RuntimeError(f"diagonal_micro_attention backend={ctx.backend!r} has no double backward "
                           "(create_graph=True): use backend='reference' for higher-order gradients")
    with torch.no_grad():  # once differentiable: the backward itself is not differentiated
        dq, dk, dv, db, dg, dn = _dma_bwd_op(q, k, v, bias, gate, null, lse, d, e, do.contiguous(),
                                             dd, ctx.scale, ctx.backend, ctx.chunk)
    return (dq, dk, dv, db if bias is not None else None, dg if gate is not None else None,
            dn if null is not None else None, None, None, None, None)


_dma_fwd_op.register_autograd(_dma_backward, setup_context=_dma_setup_context)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------
def _triton_impl():
    return importlib.import_module(".dma_triton", __package__)


def _per_head(x, name, b, h, n, like):
    """Validate a (B, N) or (B, H, N) PoI tensor and view it as (B, H, N) fp32."""
    if x is None:
        return None
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():  # a bool mask read as a +1 bias would be silently wrong
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}"
                        + (" (a mask is a float key_bias with -inf at the masked keys)"
                           if name == "key_bias" else ""))
    if x.dim() == 2 and tuple(x.shape) == (b, n):
        x = x.unsqueeze(1).expand(b, h, n)
    elif not (x.dim() == 3 and tuple(x.shape) == (b, h, n)):
        raise ValueError(f"{name} must have shape (B, N)=({b}, {n}) or "
                         f"(B, H, N)=({b}, {h}, {n}), got {tuple(x.shape)}")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but q is on {like.device}")
    return x.float()


def _check_inputs(q, k, v, key_bias=None, query_gate=None, null_logit=None):
    """The checks of every DMA path (reference and fused): q, k, v (B, H, N, d) of one shape,
    dtype and device; PoI tensors floating point, (B, N) or (B, H, N), returned as
    (B, H, N) fp32; a key bias may hold -inf (a masked key), never +inf or NaN (checked
    eagerly: under torch.compile and CUDA-graph capture the check is left out)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, d), got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be fp32, fp16 or bf16, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k, v must be on the same device")
    b, h, n, dim = q.shape
    if dim == 0:
        raise ValueError(f"q, k, v have head dim d = 0 (shape {tuple(q.shape)}): DMA needs d >= 1")
    bias = _per_head(key_bias, "key_bias", b, h, n, q)
    if bias is not None and not torch.compiler.is_compiling() and not (
            bias.is_cuda and torch.cuda.is_current_stream_capturing()):
        bad = torch.isposinf(bias) | torch.isnan(bias)
        if bool(bad.any()):
            raise ValueError("key_bias holds +inf or NaN: a bias is finite, or -inf to mask a key "
                             f"(first bad value at index {tuple(bad.nonzero()[0].tolist())})")
    return (bias, _per_head(query_gate, "query_gate", b, h, n, q),
            _per_head(null_logit, "null_logit", b, h, n, q))


def _chunk(chunk, b, h, n) -> int:
    """The torch backend's row chunk: a positive int (None: ~64 MB of scores)."""
    if chunk is None:
        return max(1, min(n, (16 << 20) // max(1, b * h * n)))
    return positive_int(chunk, "chunk")


def diagonal_micro_attention(q, k, v, key_bias=None, query_gate=None, scale=None,
                             return_diag=False, backend="auto", chunk=None, null_logit=None):
    """Diagonal Micro-Attention, O(B*H*N*d) memory on the fused paths.

    Args:
        q, k, v: (B, H, N, d), same shape, dtype (fp32/fp16/bf16) and device.
        key_bias: (B, N) or (B, H, N) additive key bias, may hold -inf.
        query_gate: (B, N) or (B, H, N) multiplicative gate on the output.
        scale: score scale, default d**-0.5.
        return_diag: also return D.
        backend: "auto" | "triton" | "torch" | "reference" (module docstring).
        chunk: row chunk of the torch backend, a positive int (default: ~64 MB of scores).
        null_logit: (B, N) or (B, H, N) logit of a null key per row (module docstring),
            or None.
    Returns:
        O (B, H, N, d) in q's dtype, and D (B, H, N) fp32 if ``return_diag``.
    """
    bias, gate, null = _check_inputs(q, k, v, key_bias, query_gate, null_logit)
    b, h, n, dim = q.shape
    scale = dim ** -0.5 if scale is None else float(scale)
    chunk = _chunk(chunk, b, h, n)
    backend = resolve_backend(backend, q, "DMA", score_bytes=4 * b * h * n * n)
    if backend == "reference":
        o, d = _dma_ref(q, k, v, bias, gate, scale, null_logit=null)
    else:
        if backend == "triton" and dim > MAX_HEAD_DIM:
            raise ValueError(f"DMA triton backend supports head dim <= {MAX_HEAD_DIM}, got {dim}")
        bias, null = _shift_bias(bias, null)  # as the reference: a large finite bias loses nothing
        bias = bias.contiguous() if bias is not None else None  # custom ops take no expanded views
        gate = gate.contiguous() if gate is not None else None
        null = null.contiguous() if null is not None else None
        # E for the backward only when autograd records this call (inference skips its GEMM)
        save_e = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, bias, gate, null))
        o, d, _, _ = _dma_fwd_op(q, k, v, bias, gate, null, scale, backend, chunk, save_e)
    return (o, d) if return_diag else o


# --------------------------------------------------------------------------
# PoI score masking and the drop-in module
# --------------------------------------------------------------------------
POI_MODES = ("none", "gate", "soft", "hard")


def poi_score_masking(scores: torch.Tensor, mode: str = "gate", quantile: float = 0.25):
    """Turn PoI scores S (B, N), a softmax over patches, into (key_bias, query_gate).

    ``gate``: g_i = N*S_i (mean 1). ``soft``: the gate plus b_j = log(N*S_j).
    ``hard``: the gate plus b_j = -inf for keys whose score is below the
    per-sample ``quantile`` of the scores. ``none``: (None, None).
    """
    if mode not in POI_MODES:
        raise ValueError(f"PoI mode must be one of {POI_MODES}, got {mode!r}")
    if mode == "none" or scores is None:
        return None, None
    if scores.dim() != 2:
        raise ValueError(f"PoI scores must be (B, N), got {tuple(scores.shape)}")
    n = scores.shape[-1]
    gate = scores.float() * n
    bias = None
    if mode == "soft":
        bias = torch.log(gate.clamp_min(torch.finfo(torch.float32).tiny))
    elif mode == "hard":
        thr = torch.quantile(scores.float(), quantile, dim=-1, keepdim=True)
        bias = torch.zeros_like(gate).masked_fill(scores.float() < thr, float("-inf"))
    return bias, gate


class DiagonalMicroAttention(nn.Module):
    """Drop-in DMA layer, parameter names as the authors' (``to_q``, ``to_k``,
    ``to_v``, ``proj``), for the tokens of any ViT.

    ``forward(x_q, x_k, x_v, poi_scores=None)`` takes (B, N, dim) token tensors
    and optional PoI scores (B, N) and returns ``(out, diag)``: (B, N, dim)
    after the output projection, and D (B, heads, N) fp32.
    ``diagonal=False`` gives the authors' full cross-attention (their
    ``diag_att=False``): out = softmax(s) v, diag still its diagonal.
    ``null_key=True`` adds a null key per query (module docstring): a scaled copy of
    the query, ``theta_h * q_i``, so its logit is ``theta_h * scale * |q_i|^2`` with a
    learned ``null_gain`` theta per head (initialised to ``null_gain_init``): a key counts
    as a match only when it scores more than that fraction of the query's own norm.
    """

    def __init__(self, dim, num_heads=1, qkv_bias=True, qk_scale=None, diagonal=True,
                 poi_mode="gate", poi_quantile=0.25, backend="auto", null_key=False,
                 null_gain_init=0.99):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.null_gain = nn.Parameter(torch.full((num_heads,), float(null_gain_init))) if null_key else None
        self.diagonal = diagonal
        self.poi_mode, self.poi_quantile = poi_mode, poi_quantile
        self.backend = backend

    def _heads(self, x):  # B N C -> B h N C/h
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x_q, x_k, x_v, poi_scores=None):
        if not (x_q.shape == x_k.shape == x_v.shape) or x_q.dim() != 3:
            raise ValueError("x_q, x_k, x_v must be (B, N, dim) tensors of one shape, got "
                             f"{tuple(x_q.shape)}, {tuple(x_k.shape)}, {tuple(x_v.shape)}")
        b, n, c = x_q.shape
        q, k, v = self._heads(self.to_q(x_q)), self._heads(self.to_k(x_k)), self._heads(self.to_v(x_v))
        bias, gate = poi_score_masking(poi_scores, self.poi_mode, self.poi_quantile)
        null = None
        if self.null_gain is not None:  # B h N: theta_h * scale * |q_i|^2
            null = self.null_gain.view(1, -1, 1) * (self.scale * q.float().pow(2).sum(-1))
        out, diag = diagonal_micro_attention(q, k, v, bias, gate, self.scale, return_diag=True,
                                             backend=self.backend, null_logit=null)
        if not self.diagonal:  # authors' full cross-attention
            out = full_cross_attention(q, k, v, bias, gate, self.scale, self.backend)
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj(out), diag


def full_cross_attention(q, k, v, key_bias=None, query_gate=None, scale=None, backend="auto"):
    """softmax(scale*q k^T + b) v, gated; SDPA on fused backends, explicit otherwise."""
    if key_bias is not None and key_bias.dim() == 2:
        key_bias = key_bias.unsqueeze(1)
    key_bias, _ = _shift_bias(key_bias, None)  # as DMA: a large finite bias loses nothing
    if check_backend(backend) == "reference":
        s = (q @ k.transpose(-2, -1)) * (scale or q.shape[-1] ** -0.5)
        if key_bias is not None:
            s = s + key_bias.unsqueeze(-2).to(s.dtype)
        out = torch.nan_to_num(s.softmax(-1), nan=0.0) @ v
    else:
        mask = None if key_bias is None else key_bias.unsqueeze(-2).to(q.dtype)
        out = torch.nan_to_num(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale))
    if query_gate is not None:
        g = query_gate.unsqueeze(1) if query_gate.dim() == 2 else query_gate
        out = out * g.unsqueeze(-1).to(out.dtype)
    return out
