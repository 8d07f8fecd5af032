"""Blockwise swapping (docs/method.md §2, docs/kernels.md): build the swapped frame I_{t/s}.

``blockwise_swap_patches(frame_a, frame_b, mask, p)`` returns the patchified
swapped frame, patch ``n`` taken from ``frame_b`` where ``mask[:, n]`` and from
``frame_a`` elsewhere, in the decoder's patch order ``(h, w, p, q, c)``:
shape (B, N, p*p*C). uint8 frames are scaled to [0, 1]; then, if given,
``(x - mean) / std`` per channel. On request it also returns the patchified,
normalised ``frame_a`` (the reconstruction target) and ``frame_b``.

Backends: ``reference`` (``swap_patches_ref``, plain torch, the spec),
``torch`` (the same as ``reference``: plain torch ops), ``triton`` (``_swap_fwd``: one
launch reads each frame once and writes every output; CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``), ``auto`` (triton on CUDA when it can run, else the reference;
kernels/backend.py).

``swap_tokens(x_a, x_b, mask)``: the same swap on token sequences (B, N, D) of
any ViT, differentiable in both inputs.
"""
from __future__ import annotations

import importlib
from typing import Optional, Sequence, Tuple

import torch

from .backend import positive_int, resolve_backend, triton_unavailable_reason

_FRAME_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)


def _patch_size(p) -> int:
    return positive_int(p, "patch_size")


def patchify(x: torch.Tensor, p: int, channels_last: bool = False) -> torch.Tensor:
    """(B, C, H, W) (or (B, H, W, C) if channels_last) -> (B, N, p*p*C), order (h, w, p, q, c)."""
    p = _patch_size(p)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    b, c, hh, ww = x.shape
    gh, gw = hh // p, ww // p
    x = x.reshape(b, c, gh, p, gw, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, gh * gw, p * p * c)


def unpatchify(x: torch.Tensor, p: int, grid: Sequence[int], channels: int = 3) -> torch.Tensor:
    """Inverse of ``patchify``: (B, N, p*p*C) -> (B, C, gh*p, gw*p)."""
    p = _patch_size(p)
    gh, gw = grid
    b = x.shape[0]
    x = x.reshape(b, gh, gw, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, gh * p, gw * p)


def _check(frame_a, frame_b, mask, p, channels_last):
    """Validate a swap's inputs (every backend); returns (B, C, H, W, N, p as an int)."""
    for name, f in (("frame_a", frame_a), ("frame_b", frame_b)):
        if not torch.is_tensor(f) or f.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, C, H, W) or (B, H, W, C), "
                             f"got {getattr(f, 'shape', type(f).__name__)}")
        if f.dtype not in _FRAME_DTYPES:
            raise TypeError(f"{name} must be uint8 or float, got {f.dtype}")
    if frame_a.shape != frame_b.shape or frame_a.dtype != frame_b.dtype:
        raise ValueError(f"frame_a and frame_b differ: {tuple(frame_a.shape)} {frame_a.dtype} "
                         f"vs {tuple(frame_b.shape)} {frame_b.dtype}")
    if frame_a.device != frame_b.device:
        raise ValueError("frame_a and frame_b are on different devices")
    p = _patch_size(p)
    b = frame_a.shape[0]
    c, hh, ww = (frame_a.shape[3], frame_a.shape[1], frame_a.shape[2]) if channels_last \
        else frame_a.shape[1:]
    if hh % p or ww % p:
        raise ValueError(f"frame size {hh}x{ww} is not divisible by patch_size {p}")
    n = (hh // p) * (ww // p)
    if not torch.is_tensor(mask) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (B, N), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if tuple(mask.shape) != (b, n):
        raise ValueError(f"mask must have shape (B, N)=({b}, {n}), got {tuple(mask.shape)}: "
                         f"build it over this image's patch grid, e.g. block_swap_mask({b}, "
                         f"({hh // p}, {ww // p}))")
    if mask.device != frame_a.device:
        raise ValueError(f"mask is on {mask.device}, frames on {frame_a.device}")
    return b, c, hh, ww, n, p


def _norm_vec(x, c, device, name):
    """A per-channel mean or std as a (C,) fp32 tensor on ``device``: finite, and a std
    without zeros (it divides)."""
    if x is None:
        return None
    t = torch.as_tensor(x).detach().to(dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(c)
    if t.numel() != c:
        raise ValueError(f"{name} must have one value per channel ({c}), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if name == "std" and bool((t == 0).any()):
        raise ValueError(f"std must be non-zero (it divides), got {t.tolist()}")
    return t.to(device).contiguous()


def swap_patches_ref(frame_a, frame_b, mask, patch_size, mean=None, std=None,
                     out_dtype=None, channels_last=False):
    """Reference: float conversion, patchify, normalise, swap, cast as separate ops.
    Inputs are checked as ``blockwise_swap_patches`` checks them.

    Returns:
        (swapped, target, other), each (B, N, p*p*C) in ``out_dtype``.
    """
    _, c, _, _, _, patch_size = _check(frame_a, frame_b, mask, patch_size, channels_last)
    return _swap_ref(frame_a, frame_b, mask, patch_size, _norm_vec(mean, c, frame_a.device, "mean"),
                     _norm_vec(std, c, frame_a.device, "std"), out_dtype, channels_last)


def _swap_ref(frame_a, frame_b, mask, patch_size, mean, std, out_dtype, channels_last):
    """``swap_patches_ref`` on checked inputs (mean, std: (C,) tensors or None)."""
    def prep(f):
        x = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
        x = patchify(x, patch_size, channels_last)
        c = x.shape[-1] // (patch_size * patch_size)
        x = x.view(*x.shape[:2], patch_size * patch_size, c)
        if mean is not None:
            x = x - mean
        if std is not None:
            x = x / std
        return x.flatten(2)

    pa, pb = prep(frame_a), prep(frame_b)
    swapped = torch.where(mask.unsqueeze(-1), pb, pa)
    return swapped.to(out_dtype), pa.to(out_dtype), pb.to(out_dtype)


def blockwise_swap_patches(frame_a, frame_b, mask, patch_size, mean=None, std=None,
                           out_dtype=None, return_target=False, return_other=False,
                           channels_last=False, backend="auto"):
    """Swap patches of ``frame_a`` for those of ``frame_b`` where ``mask``, patchified.

    Args:
        frame_a, frame_b: (B, C, H, W), or (B, H, W, C) with channels_last;
            uint8 or float, same shape and dtype. frame_a is I_t, frame_b I_{t+d}.
        mask: bool (B, N), N = (H/p)*(W/p), row-major patch grid.
        patch_size: p. mean, std: per-channel normalisation (after /255 for uint8).
        out_dtype: output dtype (default fp32 for uint8 input, else the input's).
        return_target, return_other: also return patchified frame_a / frame_b.
        backend: "auto" | "triton" | "torch" | "reference" (module docstring).
    Returns:
        swapped (B, N, p*p*C), or a tuple starting with it when more is asked.
    """
    b, c, hh, ww, n, patch_size = _check(frame_a, frame_b, mask, patch_size, channels_last)
    if out_dtype is None:
        out_dtype = torch.float32 if frame_a.dtype == torch.uint8 else frame_a.dtype
    mean_t = _norm_vec(mean, c, frame_a.device, "mean")
    std_t = _norm_vec(std, c, frame_a.device, "std")
    if resolve_backend(backend, frame_a, "swap") == "triton":
        outs = _swap_op(frame_a, frame_b, mask, patch_size, mean_t, std_t, out_dtype,
                        return_target, return_other, channels_last)
        outs = (outs[0], outs[1] if return_target else None, outs[2] if return_other else None)
    else:
        outs = _swap_ref(frame_a, frame_b, mask, patch_size, mean_t, std_t, out_dtype, channels_last)
    swapped, target, other = outs
    extra = [t for t, want in ((target, return_target), (other, return_other)) if want]
    return (swapped, *extra) if extra else swapped


@torch.library.custom_op("micronbert::swap_patches", mutates_args=())
def _swap_op(frame_a: torch.Tensor, frame_b: torch.Tensor, mask: torch.Tensor, patch_size: int,
             mean: Optional[torch.Tensor], std: Optional[torch.Tensor], out_dtype: torch.dtype,
             want_a: bool, want_b: bool, channels_last: bool
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused gather as a PyTorch operator (eager calls, torch.compile, CUDA graphs): the
    Triton kernel where it can run (CUDA, or the interpreter), the reference elsewhere; outputs
    not asked for come back empty. Frames are data: no autograd."""
    if triton_unavailable_reason(frame_a) is None:
        mod = importlib.import_module(".swap_triton", __package__)
        s, a, b = mod.swap_fwd(frame_a, frame_b, mask, patch_size, mean, std, out_dtype, want_a,
                               want_b, channels_last)
    else:
        s, a, b = _swap_ref(frame_a, frame_b, mask, patch_size, mean, std, out_dtype, channels_last)
        a, b = (a if want_a else None), (b if want_b else None)
    empty = lambda: frame_a.new_empty(0, dtype=out_dtype)  # noqa: E731
    return s, a if a is not None else empty(), b if b is not None else empty()


@_swap_op.register_fake
def _(frame_a, frame_b, mask, patch_size, mean, std, out_dtype, want_a, want_b, channels_last):
    b, n = mask.shape
    c = frame_a.shape[3] if channels_last else frame_a.shape[1]
    shape = (b, n, patch_size * patch_size * c)
    out = lambda want: frame_a.new_empty(shape if want else (0,), dtype=out_dtype)  # noqa: E731
    return out(True), out(want_a), out(want_b)


class _SwapTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_a, x_b, mask):
        ctx.save_for_backward(mask)
        return torch.where(mask.unsqueeze(-1), x_b, x_a)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        m = mask.unsqueeze(-1)
        zero = torch.zeros((), dtype=g.dtype, device=g.device)
        return torch.where(m, zero, g), torch.where(m, g, zero), None


def swap_tokens(x_a: torch.Tensor, x_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-space blockwise swap for any ViT: ``x_b[n]`` where ``mask[:, n]``, else ``x_a[n]``.

    Args:
        x_a, x_b: (B, N, D) tokens, same shape. mask: bool (B, N).
    Returns:
        (B, N, D), differentiable in x_a and x_b.
    """
    if x_a.shape != x_b.shape or x_a.dim() != 3:
        raise ValueError(f"x_a and x_b must be (B, N, D) of one shape, got "
                         f"{tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x_a.shape[:2]):
        raise ValueError(f"mask must be bool (B, N)={tuple(x_a.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    return _SwapTokens.apply(x_a, x_b, mask)
