"""Trivial baselines of recognition, on the same onset/apex frames the model sees:
the pixel difference |apex - onset| and OpenCV Farneback optical flow onset -> apex, each
as a per-pixel map and pooled to the model's patch grid (one value per patch and channel).

The maps are (B, C, H, W) float; ``patch_pool`` turns them into (B, C * N) features, in
the same patch order as the model's tokens (row-major over the grid).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pixel_difference(onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) twice -> |apex - onset| averaged over the channels, (B, 1, H, W)."""
    return (apex.float() - onset.float()).abs().mean(1, keepdim=True)


def _grey(frames: torch.Tensor) -> np.ndarray:
    """uint8 (B, 3, H, W) -> uint8 (B, H, W), ITU-R 601 luma as OpenCV's RGB2GRAY."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (frames.float().cpu() * w).sum(1).round().clamp(0, 255).to(torch.uint8).numpy()


def farneback_flow(onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
    """OpenCV Farneback flow onset -> apex on the grey frames: (B, 3, H, W) = u, v (px)
    and the magnitude. Parameters as commonly used for micro-expressions (pyramid 0.5,
    3 levels, window 15, 3 iterations, poly_n 5, sigma 1.2)."""
    import cv2
    a, b = _grey(onset), _grey(apex)
    flows = [cv2.calcOpticalFlowFarneback(x, y, None, 0.5, 3, 15, 3, 5, 1.2, 0) for x, y in zip(a, b)]
    uv = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)  # B 2 H W
    return torch.cat([uv, uv.norm(dim=1, keepdim=True)], 1)


def patch_pool(maps: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> mean per patch and channel, (B, C * N)."""
    return F.avg_pool2d(maps.float(), patch_size).flatten(1)


FEATURE_BASELINES = {"pixel_difference": pixel_difference, "optical_flow": farneback_flow}


def baseline_features(onset: torch.Tensor, apex: torch.Tensor, patch_size: int, batch: int = 256):
    """{name: (K, C * N) features} of every feature baseline, computed ``batch`` clips at a time."""
    out = {}
    for name, fn in FEATURE_BASELINES.items():
        out[name] = torch.cat([patch_pool(fn(onset[i:i + batch], apex[i:i + batch]), patch_size)
                               for i in range(0, len(onset), batch)])
    return out
