"""Triton kernel of the blockwise-swap patch gather (imported lazily by ``swap.py``).

``_swap_fwd``: one program per (BLOCK_P patches of one sample); element ``e``
of patch ``n`` is pixel (row = (n // GW)*P + e // (P*C), col = (n % GW)*P +
(e // C) % P, channel = e % C), read through the frame's strides (NCHW or NHWC
alike). Where only the swapped output is wanted, each patch is read from the
one frame it comes from; otherwise each frame is read once.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .dma_triton import _empty


@triton.jit
def _swap_fwd(A, B, Mask, Mean, Std, OutS, OutA, OutB,
              sab, sac, sah, saw, smb, smn,
              N, GW, C, PQC,
              P: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr,
              IS_UINT8: tl.constexpr, HAS_MEAN: tl.constexpr, HAS_STD: tl.constexpr,
              WRITE_A: tl.constexpr, WRITE_B: tl.constexpr):
    pid_n = tl.program_id(0)
    b = tl.program_id(1)
    offs_n = pid_n * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_e = tl.arange(0, BLOCK_E)
    n_ok = offs_n < N
    e_ok = offs_e < PQC
    ok = n_ok[:, None] & e_ok[None, :]
    c = offs_e % C
    qj = (offs_e // C) % P
    pi = offs_e // (P * C)
    row = (offs_n // GW)[:, None] * P + pi[None, :]
    col = (offs_n % GW)[:, None] * P + qj[None, :]
    pix = b * sab + c[None, :] * sac + row * sah + col * saw
    m = tl.load(Mask + b * smb + offs_n * smn, mask=n_ok, other=0) != 0
    mm = m[:, None] & ok
    if WRITE_A or WRITE_B:
        xa = tl.load(A + pix, mask=ok, other=0).to(tl.float32)
        xb = tl.load(B + pix, mask=ok, other=0).to(tl.float32)
        xs = tl.where(mm, xb, xa)
    else:  # read each patch only from the frame it comes from
        xa = tl.load(A + pix, mask=ok & ~mm, other=0).to(tl.float32)
        xb = tl.load(B + pix, mask=mm, other=0).to(tl.float32)
        xs = xa + xb
    if IS_UINT8:
        # correctly rounded division: bit-equal to the reference's x / 255
        xs = tl.math.div_rn(xs, 255.0)
        xa = tl.math.div_rn(xa, 255.0)
        xb = tl.math.div_rn(xb, 255.0)
    if HAS_MEAN:
        mu = tl.load(Mean + c, mask=e_ok, other=0.0)[None, :]
        xs, xa, xb = xs - mu, xa - mu, xb - mu
    if HAS_STD:
        sd = tl.load(Std + c, mask=e_ok, other=1.0)[None, :]
        xs, xa, xb = tl.math.div_rn(xs, sd), tl.math.div_rn(xa, sd), tl.math.div_rn(xb, sd)
    out = (b * N + offs_n)[:, None] * PQC + offs_e[None, :]
    tl.store(OutS + out, xs.to(OutS.dtype.element_ty), mask=ok)
    if WRITE_A:
        tl.store(OutA + out, xa.to(OutA.dtype.element_ty), mask=ok)
    if WRITE_B:
        tl.store(OutB + out, xb.to(OutB.dtype.element_ty), mask=ok)


ELEMS_PER_PROGRAM = 2048  # patch elements per program (a memory-bound gather: modest tiles)


def block_sizes(pqc: int, n: int):
    """(BLOCK_P patches, BLOCK_E elements) per program for patches of pqc elements."""
    block_e = triton.next_power_of_2(pqc)
    block_p = max(1, min(triton.next_power_of_2(n), ELEMS_PER_PROGRAM // block_e))
    if os.environ.get("TRITON_INTERPRET", "0") == "1":  # whole-array numpy: bigger is faster
        block_p = max(block_p, min(triton.next_power_of_2(n), 64))
    return block_p, block_e


def swap_fwd(frame_a, frame_b, mask, p, mean, std, out_dtype, want_a, want_b, channels_last):
    """Fused swap gather.

    Args:
        frame_a, frame_b: 4-D frames (any strides), mask bool (B, N),
        mean/std fp32 (C,) or None.
    Returns:
        (swapped, target or None, other or None), each (B, N, p*p*C) out_dtype.
    """
    if channels_last:
        bsz, hh, ww, c = frame_a.shape
        sab, sah, saw, sac = frame_a.stride()
        if frame_b.stride() != frame_a.stride():
            frame_b = frame_b.contiguous()
            frame_a = frame_a.contiguous()
            sab, sah, saw, sac = frame_a.stride()
    else:
        bsz, c, hh, ww = frame_a.shape
        if frame_b.stride() != frame_a.stride():
            frame_a, frame_b = frame_a.contiguous(), frame_b.contiguous()
        sab, sac, sah, saw = frame_a.stride()
    gw = ww // p
    n = (hh // p) * gw
    pqc = p * p * c
    outs = [_empty((bsz, n, pqc), frame_a, out_dtype) if want else None
            for want in (True, want_a, want_b)]
    block_p, block_e = block_sizes(pqc, n)
    mask_u8 = mask.view(torch.uint8)
    dummy = torch.empty(1, device=frame_a.device, dtype=torch.float32)
    grid = (triton.cdiv(n, block_p), bsz)
    _swap_fwd[grid](frame_a, frame_b, mask_u8, mean if mean is not None else dummy,
                    std if std is not None else dummy, outs[0],
                    outs[1] if want_a else outs[0], outs[2] if want_b else outs[0],
                    sab, sac, sah, saw, *mask_u8.stride(), n, gw, c, pqc,
                    P=p, BLOCK_P=block_p, BLOCK_E=block_e,
                    IS_UINT8=frame_a.dtype == torch.uint8, HAS_MEAN=mean is not None,
                    HAS_STD=std is not None, WRITE_A=want_a, WRITE_B=want_b, num_warps=4)
    return tuple(outs)
