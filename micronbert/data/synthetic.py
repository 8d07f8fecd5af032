"""Synthetic micro-motion on real face photographs that ship inside scikit-image.

A small facial region moves by 1-3 px (a Gaussian displacement bump, so the
face deforms smoothly as muscles do); the ground-truth motion mask marks where
the displacement exceeds a quarter pixel. Faces: ``astronaut`` (cropped to the
face) and the 100 face images of ``lfw_subset``; each face is a "subject".
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, scaled to [0, 1] and ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames_u8.device).view(1, 3, 1, 1)
    return (frames_u8.float() / 255.0 - mean) / std


@lru_cache(maxsize=4)
def face_images(size: int = 64, max_faces: int = 101) -> torch.Tensor:
    """Real faces from scikit-image's wheel: uint8 (M, 3, size, size)."""
    from skimage import data
    astro = torch.from_numpy(data.astronaut()[20:240, 150:370].copy()).permute(2, 0, 1).float()
    faces = [F.interpolate(astro[None], size=(size, size), mode="area")[0]]
    lfw = torch.from_numpy(data.lfw_subset()[:100].astype(np.float32) * 255.0)  # 100 faces
    lfw = F.interpolate(lfw[:, None], size=(size, size), mode="bicubic", align_corners=False)
    faces += list(lfw.expand(-1, 3, -1, -1))
    return torch.stack(faces[:max_faces]).clamp(0, 255).round().to(torch.uint8)


def warp_region(img: torch.Tensor, center, shift, sigma: float):
    """Move the content around ``center`` (y, x in px) by ``shift`` (dy, dx) px.

    Args:
        img: float (C, H, W). sigma: width of the Gaussian bump in px.
    Returns:
        warped image (C, H, W) and the displacement magnitude (H, W) in px.
    """
    _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    bump = torch.exp(-((ys - center[0]) ** 2 + (xs - center[1]) ** 2) / (2 * sigma ** 2))
    dy, dx = shift[0] * bump, shift[1] * bump
    # backward warp: out(x) = img(x - u(x)); grid in [-1, 1] with align_corners=False
    gx = (xs - dx + 0.5) / w * 2 - 1
    gy = (ys - dy + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], -1)[None]
    out = F.grid_sample(img[None].float(), grid, mode="bicubic", padding_mode="border",
                        align_corners=False)[0]
    return out, torch.sqrt(dy ** 2 + dx ** 2)


def synthetic_pairs(n: int, size: int = 64, seed: int = 0, faces: torch.Tensor = None,
                    max_shift: float = 3.0, min_shift: float = 1.0):
    """``n`` pairs (I_t, I_{t+d}) with one small facial region moved 1-3 px.

    Returns:
        frame_t, frame_next: uint8 (n, 3, size, size); motion: bool (n, size, size)
        where the displacement exceeds 0.25 px; subject: long (n,) face index.
    """
    g = torch.Generator().manual_seed(seed)
    faces = face_images(size) if faces is None else faces
    subj = torch.randint(len(faces), (n,), generator=g)
    out_t, out_n, motion = [], [], []
    for i in range(n):
        img = faces[subj[i]].float()
        r = torch.rand(5, generator=g).tolist()
        cy, cx = size * (0.3 + 0.45 * r[0]), size * (0.25 + 0.5 * r[1])  # inside the face
        mag = min_shift + (max_shift - min_shift) * r[2]
        ang = 2 * math.pi * r[3]
        sigma = size * (0.05 + 0.04 * r[4])
        warped, disp = warp_region(img, (cy, cx), (mag * math.sin(ang), mag * math.cos(ang)), sigma)
        out_t.append(img)
        out_n.append(warped)
        motion.append(disp > 0.25)
    as_u8 = lambda xs: torch.stack(xs).clamp(0, 255).round().to(torch.uint8)  # noqa: E731
    return as_u8(out_t), as_u8(out_n), torch.stack(motion), subj
