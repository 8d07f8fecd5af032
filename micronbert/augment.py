"""Augmentations of onset/apex pairs that keep the pair aligned: one random crop, flip,
small rotation and colour jitter per pair, the same on both frames (so the motion between
them is untouched), on uint8 tensors, in torch (CPU or CUDA)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)


@dataclass
class PairAugment:
    """Parameters of ``pair_augment``; ``PairAugment()`` is a mild default for faces."""
    crop_scale: Tuple[float, float] = (0.8, 1.0)  # area fraction of the square crop
    rotate: float = 5.0  # degrees, uniform in [-rotate, rotate]
    flip: float = 0.5  # probability of a horizontal flip
    jitter: float = 0.2  # brightness, contrast and saturation factors in [1 - j, 1 + j]

    @property
    def identity(self) -> bool:
        return tuple(self.crop_scale) == (1.0, 1.0) and not self.rotate and not self.flip and not self.jitter


def affine_theta(r: torch.Tensor, aug: PairAugment) -> torch.Tensor:
    """The random crop, rotation and flip of ``aug`` from draws ``r`` (B, >= 5) in [0, 1):
    (B, 2, 3) affine maps from output to input coordinates (``F.affine_grid``'s theta)."""
    lo, hi = aug.crop_scale
    s = torch.sqrt(lo + (hi - lo) * r[:, 0])  # side of the crop, as a fraction
    tx, ty = (1 - s) * (2 * r[:, 1] - 1), (1 - s) * (2 * r[:, 2] - 1)
    ang = math.radians(aug.rotate) * (2 * r[:, 3] - 1)
    fl = torch.where(r[:, 4] < aug.flip, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    return torch.stack([torch.stack([s * cos * fl, -s * sin, tx], 1),
                        torch.stack([s * sin * fl, s * cos, ty], 1)], 1)  # B 2 3: output -> input


def pair_augment(onset: torch.Tensor, apex: torch.Tensor, aug: PairAugment,
                 generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, 3, H, W) twice -> the same, each pair transformed by one random draw.

    The draws come from ``generator`` (a CPU generator: the same numbers on any device);
    pair i's geometric warp and colour change are the same function on both its frames.
    """
    if onset.shape != apex.shape or onset.dtype != torch.uint8 or apex.dtype != torch.uint8:
        raise ValueError(f"pair_augment takes two uint8 (B, 3, H, W) batches of one shape, got "
                         f"{tuple(onset.shape)} {onset.dtype} and {tuple(apex.shape)} {apex.dtype}")
    r = torch.rand(onset.shape[0], 8, generator=generator).to(onset.device)
    if aug.identity:
        return onset, apex
    b = onset.shape[0]
    theta = affine_theta(r, aug)
    x = torch.cat([onset, apex]).float()
    grid = F.affine_grid(theta.repeat(2, 1, 1), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    j = aug.jitter
    fb, fc, fs = (1 + j * (2 * r[:, k] - 1) for k in (5, 6, 7))
    fb, fc, fs = (f.repeat(2).view(-1, 1, 1, 1) for f in (fb, fc, fs))
    luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
    x = x * fb
    mean = (x[:b] * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True).repeat(2, 1, 1, 1)
    x = (x - mean) * fc + mean  # contrast about the onset's mean: one function for the pair
    grey = (x * luma).sum(1, keepdim=True)
    x = (x - grey) * fs + grey
    x = x.round().clamp(0, 255).to(torch.uint8)
    return x[:b], x[b:]


def random_resized_crop(images, scale, generator=None, ratio=(3 / 4, 4 / 3), rand=None):
    """A random crop per sample (area fraction in ``scale``), resized back to the input size.
    ``rand`` (B, 4) in [0, 1) fixes the draws (loaders give one per sample)."""
    b = images.shape[0]
    if rand is None:
        gdev = generator.device if generator is not None else torch.device("cpu")
        rand = torch.rand(b, 4, generator=generator, device=gdev)
    r = rand.to(device=images.device, dtype=images.dtype)
    area = scale[0] + (scale[1] - scale[0]) * r[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * r[:, 1]
    aspect = torch.exp(logr)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - sw) * (2 * r[:, 2] - 1)
    cy = (1 - sh) * (2 * r[:, 3] - 1)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
