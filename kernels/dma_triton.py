"""Triton kernels of Diagonal Micro-Attention (imported lazily by ``dma.py``).

Forward ``_dma_fwd``: one program per (query block, batch*head); streams the
log-sum-exp over key blocks (flash style, the N x N matrix never exists), then
writes ``D = exp(s_ii - lse)`` and ``O = g*D*v``; saves ``lse``. For training
(``SAVE_E``) the same pass also accumulates ``sum_j P_ij k_j`` (flash attention's
online softmax with the keys as values) and saves ``E = k - P k`` (B, H, N, d):
then ``dq_i = scale*W_i*E_i`` is elementwise and the backward needs the scores once.

Backward:
  ``_dma_bwd_rows`` (rows, no matrix work): W = (g<dO,v> + dD) D, dv = g D dO, dg;
  ``_dma_bwd_dk`` (key blocks, one score tile per (key block, query block) pair,
  the whole head dim in one accumulator): dk = scale*(W q - P^T (W q)),
  db = W - P^T W, and dq = scale*W*E for its rows.
Matrix work, in units of N^2*d multiply-adds per batch*head: forward 1 (inference) or
2 (training), backward 2; 4 in all, the essential count of a backward that does not keep
P (S forward, S again, P k, P^T (W q)). Deterministic: no atomics.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Shipped configurations, by padded head dim:
# (BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, num_warps, num_stages).
# BLOCK_M: rows (fwd, bwd_rows) or keys (bwd_dk) per program; BLOCK_N: the streamed block.
# BLOCK_D: the head-dim chunk the scores are summed over (== head dim: the program's own
# rows stay resident). BLOCK_DV: output columns per program (fwd: O's store chunk; bwd_rows:
# its column chunk; bwd_dk: the accumulator width, == head dim so that the scores are
# computed once per tile pair). BLOCK_M >= 64 where there are dots, so that Hopper uses
# warpgroup MMA (HGMMA); the compile test checks every configuration (and the forward with
# and without E) for sm_90: it compiles, uses HGMMA where it multiplies, and spills nothing.
CONFIGS = {
    "fwd": {16: (64, 64, 16, 16, 4, 2), 32: (64, 64, 32, 32, 4, 2), 64: (64, 64, 64, 64, 4, 2),
            128: (64, 64, 128, 128, 8, 2), 256: (64, 64, 64, 64, 8, 2),
            512: (64, 64, 64, 64, 8, 2)},
    "bwd_rows": {16: (64, 0, 16, 16, 4, 1), 32: (64, 0, 32, 32, 4, 1), 64: (64, 0, 64, 64, 4, 1),
                 128: (64, 0, 64, 64, 4, 1), 256: (64, 0, 64, 64, 4, 1), 512: (64, 0, 64, 64, 4, 1)},
    # d = 512: 32 queries a step, so that the 64 x 512 fp32 accumulator fits without spilling
    "bwd_dk": {16: (64, 64, 16, 16, 4, 2), 32: (64, 64, 32, 32, 4, 2), 64: (64, 64, 64, 64, 8, 2),
               128: (64, 64, 64, 128, 8, 2), 256: (64, 64, 64, 256, 8, 2),
               512: (64, 32, 64, 512, 8, 2)},
}
KERNELS = ("fwd", "bwd_rows", "bwd_dk")


def head_dim_pad(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


@triton.jit
def _load_resident(A, offs, ok, san, sad, DIM, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                   UPCAST: tl.constexpr):
    """All HEAD_DIM columns of rows ``offs`` when they stay resident (BLOCK_D == HEAD_DIM);
    otherwise a one-element placeholder (the rows are streamed in chunks by ``_dot_rows``)."""
    if BLOCK_D == HEAD_DIM:
        offs_d = tl.arange(0, HEAD_DIM)
        a = tl.load(A + offs[:, None] * san + offs_d[None, :] * sad,
                    mask=ok[:, None] & (offs_d[None, :] < DIM), other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
    else:
        a = tl.zeros([1], tl.float32)
    return a


@triton.jit
def _dot_rows(A, Bm, offs_a, offs_b, a_ok, b_ok, san, sad, sbn, sbd, DIM, a_res,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_A: tl.constexpr,
              BLOCK_B: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """<a_i, b_j> for rows offs_a of A and offs_b of Bm: (BLOCK_A, BLOCK_B) fp32, the head
    dim walked in BLOCK_D chunks (a_res: A's rows, resident, when BLOCK_D == HEAD_DIM)."""
    if BLOCK_D == HEAD_DIM:
        offs_d = tl.arange(0, HEAD_DIM)
        bt = tl.load(Bm + offs_b[None, :] * sbn + offs_d[:, None] * sbd,
                     mask=b_ok[None, :] & (offs_d[:, None] < DIM), other=0.0)
        if UPCAST:
            bt = bt.to(tl.float32)
        acc = tl.dot(a_res, bt, input_precision=PRECISION)
    else:
        acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
        for c in range(0, HEAD_DIM, BLOCK_D):
            offs_d = c + tl.arange(0, BLOCK_D)
            d_ok = offs_d < DIM
            a = tl.load(A + offs_a[:, None] * san + offs_d[None, :] * sad,
                        mask=a_ok[:, None] & d_ok[None, :], other=0.0)
            bt = tl.load(Bm + offs_b[None, :] * sbn + offs_d[:, None] * sbd,
                         mask=b_ok[None, :] & d_ok[:, None], other=0.0)
            if UPCAST:
                a, bt = a.to(tl.float32), bt.to(tl.float32)
            acc = tl.dot(a, bt, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _rowdot(A, Bm, offs, ok, san, sad, sbn, sbd, DIM, HEAD_DIM: tl.constexpr,
            BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """<a_i, b_i> row by row, fp32, (BLOCK_M,)."""
    acc = tl.zeros([BLOCK_M], tl.float32)
    for c in range(0, DIM, BLOCK_D):  # a run-time bound: not unrolled
        offs_d = c + tl.arange(0, BLOCK_D)
        msk = ok[:, None] & (offs_d[None, :] < DIM)
        a = tl.load(A + offs[:, None] * san + offs_d[None, :] * sad, mask=msk, other=0.0)
        bb = tl.load(Bm + offs[:, None] * sbn + offs_d[None, :] * sbd, mask=msk, other=0.0)
        acc += tl.sum(a.to(tl.float32) * bb.to(tl.float32), 1)
    return acc


@triton.jit
def _dma_fwd(Q, K, V, Bias, Gate, Null, O, Dg, LSE, E,
             sqb, sqh, sqn, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
             sob, soh, son, sod, sbb, sbh, sbn, sgb, sgh, sgn, snb, snh, snn,
             H, N, DIM, scale,
             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
             HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_NULL: tl.constexpr,
             SAVE_E: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < N
    Q += b * sqb + h * sqh
    K += b * skb + h * skh
    V += b * svb + h * svh
    q = _load_resident(Q, offs_m, m_ok, sqn, sqd, DIM, HEAD_DIM, BLOCK_D, UPCAST)
    if HAS_NULL:  # the null key's logit starts the running log-sum-exp
        m_i = tl.load(Null + b * snb + h * snh + offs_m * snn, mask=m_ok, other=float("-inf"))
        l_i = tl.where(m_i == float("-inf"), 0.0, 1.0)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
    offs_e = tl.arange(0, HEAD_DIM)
    e_ok = offs_e < DIM
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)  # training: sum_j exp(s_ij - m_i) k_j
    for start_n in range(0, N, BLOCK_N):  # streaming log-sum-exp over key blocks
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        s = _dot_rows(Q, K, offs_m, offs_n, m_ok, n_ok, sqn, sqd, skn, skd, DIM, q,
                      HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, UPCAST, PRECISION) * scale
        if HAS_BIAS:
            s += tl.load(Bias + b * sbb + h * sbh + offs_n * sbn, mask=n_ok, other=float("-inf"))[None, :]
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if SAVE_E:  # flash attention's output with the keys as values
            kv = tl.load(K + offs_n[:, None] * skn + offs_e[None, :] * skd,
                         mask=n_ok[:, None] & e_ok[None, :], other=0.0)
            if UPCAST:
                kv = kv.to(tl.float32)
            acc = tl.dot(p.to(kv.dtype), kv, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1e-30)), float("-inf"))  # -inf: all masked
    lse_safe = tl.where(l_i > 0, lse, float("inf"))
    if SAVE_E:  # E_i = k_i - sum_j P_ij k_j (P over the real keys; the null key has no value)
        me = m_ok[:, None] & e_ok[None, :]
        ki = tl.load(K + offs_m[:, None] * skn + offs_e[None, :] * skd, mask=me, other=0.0)
        pk = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(E + (pid_bh * N + offs_m[:, None]) * DIM + offs_e[None, :],
                 (ki.to(tl.float32) - pk).to(E.dtype.element_ty), mask=me)
    # the diagonal s_ii, D_i = exp(s_ii - lse_i), and O_i = g_i D_i v_i
    s_ii = _rowdot(Q, K, offs_m, m_ok, sqn, sqd, skn, skd, DIM, HEAD_DIM, BLOCK_D, BLOCK_M) * scale
    if HAS_BIAS:
        s_ii += tl.load(Bias + b * sbb + h * sbh + offs_m * sbn, mask=m_ok, other=0.0)
    dg = tl.exp(s_ii - lse_safe)
    w = dg
    if HAS_GATE:
        w = w * tl.load(Gate + b * sgb + h * sgh + offs_m * sgn, mask=m_ok, other=0.0)
    for c in range(0, HEAD_DIM, BLOCK_DV):
        offs_d = c + tl.arange(0, BLOCK_DV)
        md = m_ok[:, None] & (offs_d[None, :] < DIM)
        v = tl.load(V + offs_m[:, None] * svn + offs_d[None, :] * svd, mask=md, other=0.0)
        tl.store(O + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :] * sod,
                 (w[:, None] * v.to(tl.float32)).to(O.dtype.element_ty), mask=md)
    row = pid_bh * N + offs_m
    tl.store(Dg + row, dg, mask=m_ok)
    tl.store(LSE + row, lse, mask=m_ok)


@triton.jit
def _dma_bwd_rows(V, Gate, Dg, DO, DD, DV, DGATE, W,
                  svb, svh, svn, svd, sob, soh, son, sod, sgb, sgh, sgn,
                  H, N, DIM,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
                  HAS_GATE: tl.constexpr, HAS_DD: tl.constexpr):
    # program: (query block, batch*head); no matrix work
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < N
    V += b * svb + h * svh
    DO += b * sob + h * soh
    row = pid_bh * N + offs_m
    # W_i = (g_i <dO_i, v_i> + dD_i) D_i, dg_i = D_i <dO_i, v_i>, dv_i = g_i D_i dO_i
    dov = _rowdot(DO, V, offs_m, m_ok, son, sod, svn, svd, DIM, HEAD_DIM, BLOCK_DV, BLOCK_M)
    dg = tl.load(Dg + row, mask=m_ok, other=0.0)
    if HAS_GATE:
        g = tl.load(Gate + b * sgb + h * sgh + offs_m * sgn, mask=m_ok, other=0.0)
        tl.store(DGATE + row, dg * dov, mask=m_ok)
    else:
        g = tl.full([BLOCK_M], 1.0, tl.float32)
    big_g = g * dov
    if HAS_DD:
        big_g += tl.load(DD + row, mask=m_ok, other=0.0)
    tl.store(W + row, big_g * dg, mask=m_ok)
    for c in range(0, DIM, BLOCK_DV):
        offs_v = c + tl.arange(0, BLOCK_DV)
        mv = m_ok[:, None] & (offs_v[None, :] < DIM)
        do = tl.load(DO + offs_m[:, None] * son + offs_v[None, :] * sod, mask=mv, other=0.0)
        tl.store(DV + row[:, None] * DIM + offs_v[None, :],
                 ((g * dg)[:, None] * do.to(tl.float32)).to(DV.dtype.element_ty), mask=mv)


@triton.jit
def _dma_bwd_dk(Q, K, Bias, LSE, W, E, DK, DB, DQ,
                sqb, sqh, sqn, sqd, skb, skh, skn, skd, sbb, sbh, sbn,
                H, N, DIM, scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # program: (key block j of BLOCK_M keys, batch*head, head-dim split: one split when
    # BLOCK_DV == HEAD_DIM), streaming query blocks i of BLOCK_N rows; one score tile each
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_v = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    offs_j = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    j_ok = offs_j < N
    Q += b * sqb + h * sqh
    K += b * skb + h * skh
    k = _load_resident(K, offs_j, j_ok, skn, skd, DIM, HEAD_DIM, BLOCK_D, UPCAST)
    if HAS_BIAS:
        bj = tl.load(Bias + b * sbb + h * sbh + offs_j * sbn, mask=j_ok, other=float("-inf"))
    offs_v = pid_v * BLOCK_DV + tl.arange(0, BLOCK_DV)
    wj = tl.load(W + pid_bh * N + offs_j, mask=j_ok, other=0.0)
    jv = j_ok[:, None] & (offs_v[None, :] < DIM)
    out = (pid_bh * N + offs_j[:, None]) * DIM + offs_v[None, :]
    ej = tl.load(E + out, mask=jv, other=0.0).to(tl.float32)  # dq_j = scale W_j E_j, first
    tl.store(DQ + out, (scale * wj[:, None] * ej).to(DQ.dtype.element_ty), mask=jv)
    # acc = sum_i W_i P_ij q_i - W_j q_j (starting from -W_j q_j keeps the epilogue small)
    qj = tl.load(Q + offs_j[:, None] * sqn + offs_v[None, :] * sqd, mask=jv, other=0.0).to(tl.float32)
    acc = -wj[:, None] * qj
    accb = tl.zeros([BLOCK_M], tl.float32)  # sum_i W_i P_ij
    for start_i in range(0, N, BLOCK_N):
        offs_i = start_i + tl.arange(0, BLOCK_N)
        i_ok = offs_i < N
        lse = tl.load(LSE + pid_bh * N + offs_i, mask=i_ok, other=float("inf"))
        lse = tl.where(lse == float("-inf"), float("inf"), lse)
        wi = tl.load(W + pid_bh * N + offs_i, mask=i_ok, other=0.0)
        st = _dot_rows(K, Q, offs_j, offs_i, j_ok, i_ok, skn, skd, sqn, sqd, DIM, k,
                       HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N, UPCAST, PRECISION) * scale  # keys x rows
        if HAS_BIAS:
            st += bj[:, None]
        st = tl.where(j_ok[:, None], st, float("-inf"))
        wp = tl.exp(st - lse[None, :]) * wi[None, :]
        accb += tl.sum(wp, 1)
        q = tl.load(Q + offs_i[:, None] * sqn + offs_v[None, :] * sqd,
                    mask=i_ok[:, None] & (offs_v[None, :] < DIM), other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        acc = tl.dot(wp.to(q.dtype), q, acc, input_precision=PRECISION)
    tl.store(DK + out, (-scale * acc).to(DK.dtype.element_ty), mask=jv)  # scale (W_j q_j - sum)
    if HAS_BIAS:
        if pid_v == 0:
            tl.store(DB + pid_bh * N + offs_j, wj - accb, mask=j_ok)


# --------------------------------------------------------------------------
# Launch plans: the grid and the compile-time constants of each kernel, used by the
# launchers below and by the roofline model (roofline.py), so that the model counts
# the very programs that run.
# --------------------------------------------------------------------------
def launch_plan(kernel: str, b: int, h: int, n: int, dim: int, configs=None) -> dict:
    """{"grid", "consts" (HEAD_DIM, BLOCK_*), "num_warps", "num_stages"} of ``kernel``
    (``configs``: another launch table of the same form, for the roofline's history)."""
    hd = head_dim_pad(dim)
    bm, bn, bd, bdv, warps, stages = (configs or CONFIGS)[kernel][hd]
    grid = (triton.cdiv(n, bm), b * h)
    if kernel in ("bwd_dk", "bwd_dq"):  # split over the head dim (bwd_dq: before issue 16)
        grid = grid + (triton.cdiv(hd, bdv),)
    consts = dict(HEAD_DIM=hd, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv)
    if kernel == "bwd_rows":
        consts = dict(HEAD_DIM=hd, BLOCK_M=bm, BLOCK_DV=bdv)
    return {"grid": grid, "consts": consts, "num_warps": warps, "num_stages": stages}


def dot_work(kernel: str, plan: dict, n: int, save_e: bool = True) -> list:
    """The ``tl.dot`` calls one program of ``kernel`` makes: [(M, N, K, calls)], from its
    loops (the key/query loop of cdiv(n, BLOCK_N) trips; the head dim in BLOCK_D chunks
    when the rows are not resident). Keep in step with the kernels: tests/test_roofline.py
    checks it against the dots the interpreter executes."""
    c = plan["consts"]
    hd = c["HEAD_DIM"]
    if kernel == "bwd_rows":
        return []
    trips = triton.cdiv(n, c["BLOCK_N"])
    bd = c["BLOCK_D"]
    scores = (c["BLOCK_M"], c["BLOCK_N"], bd, trips * (hd // bd))  # S (fwd) or S^T (bwd_dk)
    if kernel == "fwd":
        return [scores] + ([(c["BLOCK_M"], hd, c["BLOCK_N"], trips)] if save_e else [])
    # bwd_dk: + P^T (W q); bwd_dq (before issue 16): + P k
    return [scores, (c["BLOCK_M"], c["BLOCK_DV"], c["BLOCK_N"], trips)]


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------
def _meta(q):
    upcast = _interpreting() and q.dtype != torch.float32
    precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"
    return upcast, precision


def _strides(t, n=3):
    return tuple(t.stride()) if t is not None else (0,) * n


# Tests set POISON = True: outputs start as NaN, so every element is proven written.
POISON = False


def _empty(shape, like, dtype):
    if POISON:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _dummy(t):
    return torch.empty(1, device=t.device, dtype=torch.float32)


def _launch(kernel, fn, q, args, **flags):
    b, h, n, dim = q.shape
    p = launch_plan(kernel, b, h, n, dim)
    fn[p["grid"]](*args, **p["consts"], **flags, num_warps=p["num_warps"], num_stages=p["num_stages"])


def dma_fwd(q, k, v, bias, gate, scale, null=None, save_e=False):
    """Fused DMA forward.

    Args:
        q, k, v: (B, H, N, d) any strides. bias, gate, null: (B, H, N) fp32 or None.
        save_e: also compute E = k - P k for the backward (training; one more N^2 d GEMM).
    Returns:
        O (B, H, N, d) contiguous, D (B, H, N) fp32, lse (B, H, N) fp32, and E (B, H, N, d)
        contiguous in q's dtype (an empty tensor without ``save_e``).
    """
    b, h, n, dim = q.shape
    o = _empty((b, h, n, dim), q, q.dtype)
    d = _empty((b, h, n), q, torch.float32)
    lse = _empty((b, h, n), q, torch.float32)
    e = _empty((b, h, n, dim), q, q.dtype) if save_e else q.new_empty(0)
    upcast, precision = _meta(q)
    _launch("fwd", _dma_fwd, q, (
        q, k, v, bias if bias is not None else _dummy(q), gate if gate is not None else _dummy(q),
        null if null is not None else _dummy(q), o, d, lse, e if save_e else _dummy(q),
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        *_strides(bias), *_strides(gate), *_strides(null), h, n, dim, scale),
        HAS_BIAS=bias is not None, HAS_GATE=gate is not None, HAS_NULL=null is not None,
        SAVE_E=save_e, UPCAST=upcast, PRECISION=precision)
    return o, d, lse, e


def dma_bwd(q, k, v, bias, gate, *, scale, lse, d, e, do, dd):
    """Fused DMA backward: the row terms, then one pass over the recomputed scores per key
    block (``e``: the forward's E = k - P k, from ``dma_fwd(..., save_e=True)``).

    Returns:
        dq, dk, dv (B, H, N, d) in the inputs' dtype; dbias, dgate (B, H, N)
        fp32 or None when the input was None; W (B, H, N) fp32, the row weights
        (g<dO, v> + dD) D (the null key's gradient is -W exp(n - lse)).
    """
    b, h, n, dim = q.shape
    if e.shape != q.shape:
        raise RuntimeError("the fused DMA backward needs E from a forward run with save_e=True "
                           "(diagonal_micro_attention sets it whenever an input requires grad)")
    dq, dk, dv = (_empty((b, h, n, dim), q, q.dtype) for _ in range(3))
    w = _empty((b, h, n), q, torch.float32)
    db = _empty((b, h, n), q, torch.float32) if bias is not None else None
    dg = _empty((b, h, n), q, torch.float32) if gate is not None else None
    upcast, precision = _meta(q)
    dummy = _dummy(q)
    dd = dd.contiguous() if dd is not None else None
    _launch("bwd_rows", _dma_bwd_rows, q, (
        v, gate if gate is not None else dummy, d, do, dd if dd is not None else dummy, dv,
        dg if dg is not None else dummy, w, *v.stride(), *do.stride(), *_strides(gate), h, n, dim),
        HAS_GATE=gate is not None, HAS_DD=dd is not None)
    _launch("bwd_dk", _dma_bwd_dk, q, (
        q, k, bias if bias is not None else dummy, lse, w, e, dk, db if db is not None else dummy, dq,
        *q.stride(), *k.stride(), *_strides(bias), h, n, dim, scale),
        HAS_BIAS=bias is not None, UPCAST=upcast, PRECISION=precision)
    return dq, dk, dv, db, dg, w
