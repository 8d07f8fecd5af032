"""Swap-mask generators for blockwise swapping (docs/method.md §2, docs/kernels.md "Masks").

A swap mask is a bool tensor (B, N) over the patch grid (gh, gw), row-major (``grid`` is
that grid, (gh, gw) or its side: ``(H // patch, W // patch)``, not N; a grid of more than
``MAX_PATCHES`` patches is refused at once as a token count given by mistake),
``True`` = take this patch from the later frame. Both generators are seeded by
a ``torch.Generator`` and are reproducible on any device: random numbers are
drawn on the generator's device, the result is moved to ``device``.

- ``random_swap_mask``: a uniform random subset of exactly ``round(ratio*N)``
  patches per sample (argsort of uniform noise, as MAE).
- ``block_swap_mask``: BEiT-style rectangles: area uniform in
  [min_patches, remaining], aspect ratio log-uniform in [min_aspect,
  1/min_aspect], up to ``max_tries`` placements per block, repeated until the
  target count is reached or a block makes no progress; then, where a sample is
  still short (a small grid, where few shapes fit, or the last few patches), rectangles
  cut to fit the remaining count and placed over a free patch, so every sample swaps
  exactly ``round(ratio*N)`` patches.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

Grid = Union[int, Sequence[int]]


# more patches than any image a ViT is given (256 x 256 patches: 4096 px at patch 16); a
# bigger grid is almost surely a token count passed as the grid's side
MAX_PATCHES = 1 << 16


def _grid(grid: Grid) -> Tuple[int, int]:
    """(gh, gw) of ``grid`` (its side, or (gh, gw)); the patch grid, not the token count."""
    if isinstance(grid, int):
        gh = gw = grid
    else:
        gh, gw = (int(g) for g in grid)
    if gh <= 0 or gw <= 0:
        raise ValueError(f"patch grid must be positive, got {(gh, gw)}")
    if gh * gw > MAX_PATCHES:
        side = math.isqrt(gh) if isinstance(grid, int) else 0
        hint = f"grid={side} for {gh} patches, or " if side * side == gh else ""
        raise ValueError(f"patch grid {gh} x {gw} has {gh * gw} patches (more than {MAX_PATCHES}): "
                         f"grid is the grid's side or (rows, cols), not the number of patches; "
                         f"pass {hint}grid=(H // patch_size, W // patch_size), e.g. (28, 28) "
                         f"for 224 px at patch 8")
    return gh, gw


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"swap ratio must be in [0, 1], got {ratio}")


def random_swap_mask(batch: int, grid: Grid, ratio: float = 0.5,
                     generator: Optional[torch.Generator] = None,
                     device=None) -> torch.Tensor:
    """Uniform random subset of exactly ``round(ratio*N)`` patches per sample.

    Args:
        batch: B. grid: patch grid (gh, gw) or its side. ratio: fraction swapped.
        generator: seeds the draw (its device is where the noise is drawn).
    Returns:
        bool (B, gh*gw) on ``device``.
    """
    _check_ratio(ratio)
    gh, gw = _grid(grid)
    n = gh * gw
    k = int(round(ratio * n))
    gdev = generator.device if generator is not None else torch.device("cpu")
    noise = torch.rand(batch, n, generator=generator, device=gdev)
    idx = noise.argsort(dim=1)[:, :k]
    mask = torch.zeros(batch, n, dtype=torch.bool, device=gdev)
    mask.scatter_(1, idx, True)
    return mask.to(device) if device is not None else mask


def block_swap_mask(batch: int, grid: Grid, ratio: float = 0.5,
                    generator: Optional[torch.Generator] = None, device=None,
                    min_patches: int = 16, min_aspect: float = 0.3,
                    max_tries: int = 10) -> torch.Tensor:
    """BEiT-style block mask with exactly ``round(ratio*N)`` patches per sample.

    Each block placement is drawn for the whole batch at once (vectorised over
    samples); a sample that has reached its target or stopped making progress
    takes no further BEiT blocks, and ``_fill_blocks`` completes it with smaller ones.

    Args:
        batch, grid, ratio, generator, device: as ``random_swap_mask``.
        min_patches: smallest block area (clamped to the remaining count).
        min_aspect: aspect ratios are log-uniform in [min_aspect, 1/min_aspect].
        max_tries: placements tried per block before giving up on it.
    Returns:
        bool (B, gh*gw) on ``device``.
    """
    _check_ratio(ratio)
    gh, gw = _grid(grid)
    target = int(round(ratio * gh * gw))
    gdev = generator.device if generator is not None else torch.device("cpu")
    mask = torch.zeros(batch, gh, gw, dtype=torch.bool, device=gdev)
    count = torch.zeros(batch, dtype=torch.long, device=gdev)
    active = torch.full((batch,), target > 0, dtype=torch.bool, device=gdev)
    rows = torch.arange(gh, device=gdev).view(1, gh, 1)
    cols = torch.arange(gw, device=gdev).view(1, 1, gw)
    log_lo, log_hi = math.log(min_aspect), math.log(1.0 / min_aspect)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=gdev)

    while bool(active.any()):
        remaining = (target - count).clamp(min=0)
        lo = remaining.clamp(max=min_patches).float()
        hi = remaining.float()
        placed = torch.zeros(batch, dtype=torch.bool, device=gdev)
        for _ in range(max_tries):
            area = lo + (hi - lo) * rand(batch)
            aspect = torch.exp(log_lo + (log_hi - log_lo) * rand(batch))
            h = torch.round(torch.sqrt(area * aspect)).long()
            w = torch.round(torch.sqrt(area / aspect)).long()
            fits = (h >= 1) & (w >= 1) & (h < gh) & (w < gw)
            hc, wc = h.clamp(1, gh - 1), w.clamp(1, gw - 1)
            top = (rand(batch) * (gh - hc + 1).float()).long().clamp(max=gh - 1)
            left = (rand(batch) * (gw - wc + 1).float()).long().clamp(max=gw - 1)
            t, l = top.view(-1, 1, 1), left.view(-1, 1, 1)
            rect = ((rows >= t) & (rows < t + hc.view(-1, 1, 1))
                    & (cols >= l) & (cols < l + wc.view(-1, 1, 1)))
            delta = (rect & ~mask).flatten(1).sum(1)
            ok = active & ~placed & fits & (delta > 0) & (delta <= remaining)
            mask |= rect & ok.view(-1, 1, 1)
            count += torch.where(ok, delta, torch.zeros_like(delta))
            placed |= ok
        active &= placed & (count < target)
    mask = _fill_blocks(mask, count, target, min_patches, log_lo, log_hi, rand)
    mask = mask.flatten(1)
    return mask.to(device) if device is not None else mask


def _fill_blocks(mask, count, target, min_patches, log_lo, log_hi, rand):
    """Complete each sample of ``mask`` (B, gh, gw) to ``target`` patches: per round, one
    rectangle per short sample, drawn as in ``block_swap_mask`` but cut to at most the
    remaining count and the grid, and placed to cover a free patch drawn at random, so every
    round adds at least one patch and never passes the target."""
    batch, gh, gw = mask.shape
    rows = torch.arange(gh, device=mask.device).view(1, gh, 1)
    cols = torch.arange(gw, device=mask.device).view(1, 1, gw)
    while bool((count < target).any()):
        short = count < target
        remaining = (target - count).clamp(min=1)
        lo = remaining.clamp(max=min_patches).float()
        area = lo + (remaining.float() - lo) * rand(batch)
        aspect = torch.exp(log_lo + (log_hi - log_lo) * rand(batch))
        h = torch.round(torch.sqrt(area * aspect)).long().clamp(min=1)
        h = torch.minimum(h, remaining.clamp(max=gh))
        w = torch.round(torch.sqrt(area / aspect)).long().clamp(min=1)
        w = torch.minimum(w, (remaining // h).clamp(max=gw))
        free = torch.where(mask.flatten(1), -1.0, rand(batch, gh * gw)).argmax(1)  # a free patch
        r, c = free // gw, free % gw  # the rectangle covers (r, c): top in [r - h + 1, r]
        top = torch.minimum((r - (rand(batch) * h).long()).clamp(min=0), gh - h)
        left = torch.minimum((c - (rand(batch) * w).long()).clamp(min=0), gw - w)
        t, l = top.view(-1, 1, 1), left.view(-1, 1, 1)
        rect = ((rows >= t) & (rows < t + h.view(-1, 1, 1))
                & (cols >= l) & (cols < l + w.view(-1, 1, 1))) & short.view(-1, 1, 1)
        count += (rect & ~mask).flatten(1).sum(1)
        mask |= rect
    return mask


def generate_swap_mask(kind: str, batch: int, grid: Grid, ratio: float = 0.5,
                       generator: Optional[torch.Generator] = None,
                       device=None) -> torch.Tensor:
    """Dispatch to ``block_swap_mask`` or ``random_swap_mask`` by name."""
    if kind == "block":
        return block_swap_mask(batch, grid, ratio, generator, device)
    if kind == "random":
        return random_swap_mask(batch, grid, ratio, generator, device)
    raise ValueError(f"unknown swap mask kind {kind!r}: expected 'block' or 'random'")
