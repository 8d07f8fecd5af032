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


# --------------------------------------------------------------------------- datasets
# class = region and direction; positions are fractions of the face crop (y, x),
# shifts are unit directions (dy, dx) in image coordinates (y down)
SYNTH_CLASSES = {
    "left_brow_raise": ((0.36, 0.33), (-1.0, 0.0)),
    "right_brow_raise": ((0.36, 0.67), (-1.0, 0.0)),
    "left_mouth_corner_pull": ((0.74, 0.36), (-0.6, -0.8)),
    "right_mouth_corner_pull": ((0.74, 0.64), (-0.6, 0.8)),
}


def random_motion(g: torch.Generator, area=((0.2, 0.85), (0.2, 0.8))):
    """A region and direction anywhere on the face (unlabeled pre-training clips):
    ((y, x) as fractions of the crop, unit (dy, dx))."""
    r = torch.rand(3, generator=g).tolist()
    (y0, y1), (x0, x1) = area
    a = 2 * math.pi * r[2]
    return (y0 + (y1 - y0) * r[0], x0 + (x1 - x0) * r[1]), (math.sin(a), math.cos(a))


def synthetic_clip(face: torch.Tensor, cls, g: torch.Generator, n_frames: int = 12,
                   fps: int = 30, min_shift: float = 1.0, max_shift: float = 3.0):
    """One clip: uint8 (T, 3, H, W), the apex motion mask (H, W) and (onset, apex, offset)
    0-based. Onset-apex-offset lasts at most 0.5 s at ``fps``. ``cls`` names one of
    ``SYNTH_CLASSES`` or is ((y, x), (dy, dx)) itself (e.g. from ``random_motion``)."""
    _, h, w = face.shape
    span = min(n_frames - 2, int(0.5 * fps))
    onset = 1
    offset = onset + span
    apex = onset + span // 2
    (cy, cx), (dy, dx) = SYNTH_CLASSES[cls] if isinstance(cls, str) else cls
    r = torch.rand(4, generator=g).tolist()
    cy, cx = h * (cy + 0.04 * (r[0] - 0.5)), w * (cx + 0.04 * (r[1] - 0.5))
    mag = min_shift + (max_shift - min_shift) * r[2]
    sigma = w * (0.05 + 0.02 * r[3])
    frames, apex_mask = [], None
    for t in range(n_frames):
        a = 0.0 if not onset < t < offset else math.sin(math.pi * (t - onset) / (offset - onset)) ** 2
        img, disp = warp_region(face.float(), (cy, cx), (a * mag * dy, a * mag * dx), sigma)
        frames.append(img)
        if t == apex:
            apex_mask = disp > 0.25
    return torch.stack(frames).clamp(0, 255).round().to(torch.uint8), apex_mask, (onset, apex, offset)


def _write_clip(out, subj, clip, frames, mask, fps, video):
    import os

    from PIL import Image

    from .io import write_video
    os.makedirs(os.path.join(out, "masks", subj), exist_ok=True)
    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(
        os.path.join(out, "masks", subj, clip + ".png"))
    arr = frames.permute(0, 2, 3, 1).numpy()
    if video:
        os.makedirs(os.path.join(out, subj), exist_ok=True)
        write_video(arr, os.path.join(out, subj, clip + ".mp4"), fps=fps)
    else:
        d = os.path.join(out, subj, clip)
        os.makedirs(d, exist_ok=True)
        for t, f in enumerate(arr):
            Image.fromarray(f).save(os.path.join(d, f"img{t + 1}.jpg"), quality=97, subsampling=0)


def write_synthetic_dataset(out: str, n_subjects: int = 8, clips_per_class: int = 3,
                            size: int = 64, fps: int = 30, n_frames: int = 12, seed: int = 0,
                            video: bool = False, progress: bool = True) -> str:
    """Write a synthetic micro-expression set in the CASME II layout:
    ``sub01/EP01_01/img1.jpg ...`` (or ``sub01/EP01_01.mp4`` with ``video``), the sheet
    ``CASME2-coding-synthetic.xlsx``, and the apex motion masks ``masks/sub01/EP01_01.png``.
    Subjects are the first ``n_subjects`` faces of ``face_images``. Returns ``out``."""
    import os

    import pandas as pd
    from tqdm import tqdm

    faces = face_images(size)
    if n_subjects > len(faces):
        raise ValueError(f"at most {len(faces)} subjects (faces shipped with scikit-image)")
    g = torch.Generator().manual_seed(seed)
    rows = []
    todo = [(s, c, k) for s in range(n_subjects) for c in SYNTH_CLASSES for k in range(clips_per_class)]
    for s, cls, k in tqdm(todo, desc="synth", disable=not progress, leave=False):
        subj = f"sub{s + 1:02d}"
        clip = f"EP{list(SYNTH_CLASSES).index(cls) + 1:02d}_{k + 1:02d}"
        frames, mask, (on, ap, off) = synthetic_clip(faces[s], cls, g, n_frames, fps)
        _write_clip(out, subj, clip, frames, mask, fps, video)
        rows.append({"Subject": s + 1, "Filename": clip, "OnsetFrame": on + 1, "ApexFrame": ap + 1,
                     "OffsetFrame": off + 1, "Action Units": "", "Estimated Emotion": cls})
    pd.DataFrame(rows).to_excel(os.path.join(out, "CASME2-coding-synthetic.xlsx"), index=False)
    return out


def write_pretraining_corpus(out: str, faces, clips_per_face: int = 8, size: int = 64,
                             fps: int = 30, n_frames: int = 12, seed: int = 0,
                             video: bool = False, progress: bool = True) -> str:
    """Unlabeled clips for pre-training: on each face of ``faces`` (indices into
    ``face_images``), ``clips_per_face`` clips whose micro-motion sits anywhere on the face
    in any direction (``random_motion``), so a model cannot learn where motion usually is,
    only what it looks like. Layout ``face007/clip01/img1.jpg`` and ``masks/...``; no sheet."""
    from tqdm import tqdm

    pool = face_images(size)
    faces = list(faces)
    if not faces or max(faces) >= len(pool) or min(faces) < 0:
        raise ValueError(f"faces must index the {len(pool)} faces shipped with scikit-image")
    g = torch.Generator().manual_seed(seed)
    todo = [(f, k) for f in faces for k in range(clips_per_face)]
    for f, k in tqdm(todo, desc="corpus", disable=not progress, leave=False):
        frames, mask, _ = synthetic_clip(pool[f], random_motion(g), g, n_frames, fps)
        _write_clip(out, f"face{f:03d}", f"clip{k + 1:02d}", frames, mask, fps, video)
    return out
