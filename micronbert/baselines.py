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


# OpenCV Farneback parameters as commonly used for micro-expressions: pyramid scale 0.5, 3
# levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2 (the one place they are set:
# recognition features, map baselines and the spotting baseline all use ``farneback``).
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback flow of two grey uint8 frames (H, W): (H, W, 2) float32 as (u, v) = (dx, dy) px."""
    import cv2
    return cv2.calcOpticalFlowFarneback(a, b, None, *FARNEBACK)


def farneback_flow(onset: torch.Tensor, apex: torch.Tensor) -> torch.Tensor:
    """Farneback flow onset -> apex on the grey frames (``FARNEBACK``): (B, 3, H, W) = u, v
    (px) and the magnitude."""
    a, b = _grey(onset), _grey(apex)
    uv = torch.from_numpy(np.stack([farneback(x, y) for x, y in zip(a, b)])).permute(0, 3, 1, 2)
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
