"""Synthetic micro-motion on real face photographs that ship inside scikit-image.

A small facial region moves by 1-3 px (a Gaussian displacement bump, so the
face deforms smoothly as muscles do); the ground-truth motion mask marks where
the displacement exceeds a quarter pixel. Faces: ``astronaut`` (cropped to the
face) and the 100 face images of ``lfw_subset``; each face is a "subject".

``nuisance`` (``NUISANCE``: none, low, medium, high) adds what makes real micro-expressions
hard, between the two frames of every pair and along each clip: rigid head motion (shift,
rotation, scale, smooth over time), illumination (gain, offset, a light gradient), blur,
sensor noise and compression (JPEG quality for frame folders, H.264 CRF with 4:2:0 chroma
for ``video``); the micro-motion amplitude is swept and a "no_motion" class carries head
motion and nuisance only. The ground-truth mask stays exact: it marks where the *local*
displacement exceeds a quarter pixel, in the apex frame's pixels, i.e. moved with the head
(the head motion itself is never in the mask); it is computed from the displacement
field, not from the degraded frames. ``none`` writes exactly what earlier versions wrote.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional, Tuple

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


def warp_region(img: torch.Tensor, center, shift, sigma: float, head: Optional[torch.Tensor] = None,
                linear=None):
    """Move the content around ``center`` (y, x in px) by ``shift`` (dy, dx) px.

    Args:
        img: float (C, H, W). sigma: width of the Gaussian bump in px.
        head: optional (2, 3) map of output pixels (y, x, 1) to face pixels (the inverse
            head pose, ``head_pose``): the deformed face is then moved with the head, in
            the same single resampling.
        linear: optional 2x2 ((a, b), (c, d)) px: a local linear deformation added to the
            shift, bump * linear @ (p - center) / sigma in (y, x) (expand: a = d > 0).
    Returns:
        warped image (C, H, W) and the local displacement magnitude (H, W) in px, at the
        output pixels (the head motion is not in it).
    """
    _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    if head is not None:  # face coordinates of each output pixel
        ys, xs = (head[0, 0] * ys + head[0, 1] * xs + head[0, 2],
                  head[1, 0] * ys + head[1, 1] * xs + head[1, 2])
    bump = torch.exp(-((ys - center[0]) ** 2 + (xs - center[1]) ** 2) / (2 * sigma ** 2))
    dy, dx = shift[0] * bump, shift[1] * bump
    if linear is not None:  # (none: the shift alone, bit for bit as before)
        ry, rx = (ys - center[0]) / sigma, (xs - center[1]) / sigma
        dy = dy + bump * (linear[0][0] * ry + linear[0][1] * rx)
        dx = dx + bump * (linear[1][0] * ry + linear[1][1] * rx)
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


NO_MOTION = "no_motion"  # the class of clips without micro-motion (nuisance levels only)


@dataclass(frozen=True)
class Nuisance:
    """What one nuisance level does to a clip of a 64 px face (px stay px at other sizes).
    Head motion, light and blur follow a smooth path over the clip (``_path``): each reaches
    up to its value here.

    shift px, rotate degrees, scale (fraction): rigid head motion about the image centre;
    gain (fraction), offset (grey levels), gradient (fraction across the face): light;
    blur: Gaussian sigma px (0.5-1 times this, varying along the clip);
    noise: sensor noise sigma, grey levels;
    jpeg: quality of the stored frames (frame folders); crf: H.264 quality (``video``);
    chroma: JPEG/H.264 chroma subsampling ("444" or "420");
    amplitude: (min, max) px of the micro-motion at the apex, drawn uniformly per clip;
    still: clips without micro-motion per subject, as a fraction of ``clips_per_class``.
    """
    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    gain: float = 0.0
    offset: float = 0.0
    gradient: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: int = 97
    crf: int = 10
    chroma: str = "444"
    amplitude: Tuple[float, float] = (1.0, 3.0)
    still: float = 0.0

    @property
    def is_none(self) -> bool:
        return self == NUISANCE["none"]


# the levels, in one place (README "Synthetic data"); amplitude is swept the same at every
# level above none, so the levels differ in nuisance alone
NUISANCE = {
    "none": Nuisance(),
    "low": Nuisance(shift=1.5, rotate=1.0, scale=0.01, gain=0.05, offset=5, gradient=0.05,
                    blur=0.5, noise=1.5, jpeg=90, crf=23, chroma="420", amplitude=(0.5, 3.0), still=1.0),
    "medium": Nuisance(shift=3.0, rotate=2.5, scale=0.025, gain=0.10, offset=10, gradient=0.10,
                       blur=0.8, noise=3.0, jpeg=75, crf=28, chroma="420", amplitude=(0.5, 3.0), still=1.0),
    "high": Nuisance(shift=5.0, rotate=4.0, scale=0.04, gain=0.20, offset=20, gradient=0.20,
                     blur=1.2, noise=6.0, jpeg=50, crf=35, chroma="420", amplitude=(0.5, 3.0), still=1.0),
}


def nuisance_level(level) -> Nuisance:
    """A level name of ``NUISANCE`` (or a ``Nuisance``) -> its ``Nuisance``."""
    if isinstance(level, Nuisance):
        return level
    if level not in NUISANCE:
        raise ValueError(f"unknown nuisance level {level!r}; choose one of {list(NUISANCE)}")
    return NUISANCE[level]


def _path(g: torch.Generator, n_frames: int, amp: float) -> torch.Tensor:
    """A smooth path over the clip in [-amp, amp]: a random start, a smoothstep drift of
    0.5..1 amp in a random direction, and a slow tremor of 0.1 amp. (T,)"""
    r = torch.rand(4, generator=g).tolist()
    t = torch.linspace(0, 1, n_frames)
    drift = (0.5 + 0.5 * r[1]) * (1 if r[2] < 0.5 else -1) * (3 * t ** 2 - 2 * t ** 3)
    p = (r[0] - 0.5) * 0.5 + drift + 0.1 * torch.sin(2 * math.pi * (t + r[3]))
    return amp * p.clamp(-1, 1)


def head_pose(shift_yx, angle_deg: float, scale: float, size) -> torch.Tensor:
    """The inverse of a rigid head pose about the image centre, as a (2, 3) map of output
    pixels (y, x, 1) to face pixels: face = c + R(-angle) (x - c - shift) / (1 + scale)."""
    h, w = size
    cy, cx = (h - 1) / 2, (w - 1) / 2
    a = math.radians(angle_deg)
    ca, sa = math.cos(a) / (1 + scale), math.sin(a) / (1 + scale)
    m = torch.tensor([[ca, sa], [-sa, ca]], dtype=torch.float32)  # R(-angle) / s in (y, x)
    off = torch.tensor([cy, cx]) - m @ torch.tensor([cy + shift_yx[0], cx + shift_yx[1]], dtype=torch.float32)
    return torch.cat([m, off[:, None]], 1)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a float (C, H, W) image, borders replicated (OpenCV: fast on 2 cores)."""
    if sigma < 0.05:
        return img
    import cv2
    r = max(1, math.ceil(3 * sigma))
    out = cv2.GaussianBlur(img.permute(1, 2, 0).contiguous().numpy(), (2 * r + 1, 2 * r + 1), sigma,
                           borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out.reshape(img.shape[1], img.shape[2], -1)).permute(2, 0, 1)


def random_motion(g: torch.Generator, area=((0.2, 0.85), (0.2, 0.8))):
    """A region and direction anywhere on the face (unlabeled pre-training clips):
    ((y, x) as fractions of the crop, unit (dy, dx))."""
    r = torch.rand(3, generator=g).tolist()
    (y0, y1), (x0, x1) = area
    a = 2 * math.pi * r[2]
    return (y0 + (y1 - y0) * r[0], x0 + (x1 - x0) * r[1]), (math.sin(a), math.cos(a))


def synthetic_clip(face: torch.Tensor, cls, g: torch.Generator, n_frames: int = 12,
                   fps: int = 30, min_shift: float = 1.0, max_shift: float = 3.0,
                   nuisance="none", gn: Optional[torch.Generator] = None, info: Optional[dict] = None):
    """One clip: uint8 (T, 3, H, W), the apex motion mask (H, W) and (onset, apex, offset)
    0-based. Onset-apex-offset lasts at most 0.5 s at ``fps``. ``cls`` names one of
    ``SYNTH_CLASSES`` or ``NO_MOTION`` (an empty mask), or is ((y, x), (dy, dx)) itself
    (e.g. from ``random_motion``) or ((y, x), (dy, dx), linear) (``warp_region``'s
    ``linear`` per px of amplitude; ``synthetic_motion.draw_motion``).

    ``nuisance`` (a level of ``NUISANCE``) draws its head motion, light, blur and noise from
    ``gn`` (default: seeded from ``g``) and its micro-motion amplitude from its own
    ``amplitude`` instead of ``min_shift``/``max_shift``; ``g`` draws what ``none`` draws, in
    the same order. Compression happens where the clip is written (``_write_clip``).
    ``info``, a dict, receives the clip's micro-motion ``amplitude`` (px at the apex), its
    ``center`` (y, x px) and ``sigma`` (px)."""
    nz = nuisance_level(nuisance)
    _, h, w = face.shape
    span = min(n_frames - 2, int(0.5 * fps))
    onset = 1
    offset = onset + span
    apex = onset + span // 2
    still = isinstance(cls, str) and cls == NO_MOTION
    (cy, cx), (dy, dx), *lin = ((0.5, 0.5), (0.0, 0.0)) if still else (
        SYNTH_CLASSES[cls] if isinstance(cls, str) else cls)
    lin = lin[0] if lin else None
    r = torch.rand(4, generator=g).tolist()
    cy, cx = h * (cy + 0.04 * (r[0] - 0.5)), w * (cx + 0.04 * (r[1] - 0.5))
    if not nz.is_none:
        min_shift, max_shift = nz.amplitude
    mag = 0.0 if still else min_shift + (max_shift - min_shift) * r[2]
    sigma = w * (0.05 + 0.02 * r[3])
    if info is not None:
        info.update(amplitude=mag, center=(cy, cx), sigma=sigma)
    if not nz.is_none:  # head pose, light and blur: smooth paths over the clip
        if gn is None:
            gn = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
        ty, tx = _path(gn, n_frames, nz.shift), _path(gn, n_frames, nz.shift)
        rot, scl = _path(gn, n_frames, nz.rotate), _path(gn, n_frames, nz.scale)
        gain, off = _path(gn, n_frames, nz.gain), _path(gn, n_frames, nz.offset)
        grad = _path(gn, n_frames, nz.gradient)
        blur = nz.blur * (0.75 + _path(gn, n_frames, 0.25))  # 0.5 .. 1 blur
        light = 2 * math.pi * float(torch.rand(1, generator=gn))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        ramp = math.sin(light) * ys + math.cos(light) * xs  # direction of the light gradient
    frames, apex_mask = [], None
    for t in range(n_frames):
        a = 0.0 if not onset < t < offset else math.sin(math.pi * (t - onset) / (offset - onset)) ** 2
        head = None if nz.is_none else head_pose((float(ty[t]), float(tx[t])), float(rot[t]),
                                                 float(scl[t]), (h, w))
        img, disp = warp_region(face.float(), (cy, cx), (a * mag * dy, a * mag * dx), sigma, head,
                                None if lin is None else [[a * mag * v for v in row] for row in lin])
        if not nz.is_none:  # (none: the clips of earlier versions, bit for bit)
            img = img * (1 + gain[t] + grad[t] * ramp) + off[t]
            img = _gaussian_blur(img, float(blur[t]))
            img = img + nz.noise * torch.randn(img.shape, generator=gn)
        frames.append(img)
        if t == apex:
            apex_mask = disp > 0.25
    return torch.stack(frames).clamp(0, 255).round().to(torch.uint8), apex_mask, (onset, apex, offset)


def _write_clip(out, subj, clip, frames, mask, fps, video, nuisance="none"):
    """Frames as JPEGs (quality ``nuisance.jpeg``) or one H.264 video (CRF ``nuisance.crf``),
    and the mask as a PNG (lossless: it stays exact)."""
    import os

    from PIL import Image

    from .io import write_video
    nz = nuisance_level(nuisance)
    os.makedirs(os.path.join(out, "masks", subj), exist_ok=True)
    Image.fromarray(mask.numpy().astype(np.uint8) * 255).save(
        os.path.join(out, "masks", subj, clip + ".png"))
    arr = frames.permute(0, 2, 3, 1).numpy()
    if video:
        os.makedirs(os.path.join(out, subj), exist_ok=True)
        write_video(arr, os.path.join(out, subj, clip + ".mp4"), fps=fps, crf=nz.crf,
                    pix_fmt=None if nz.chroma == "444" else "yuv420p")
    else:
        d = os.path.join(out, subj, clip)
        os.makedirs(d, exist_ok=True)
        for t, f in enumerate(arr):
            Image.fromarray(f).save(os.path.join(d, f"img{t + 1}.jpg"), quality=nz.jpeg,
                                    subsampling=0 if nz.chroma == "444" else 2)


def _write_nuisance(out, level, seed, benchmark=None):
    import json
    import os
    extra = {} if benchmark is None else {"benchmark": benchmark}
    with open(os.path.join(out, "nuisance.json"), "w") as f:
        json.dump({"level": level, "seed": seed, **extra, **asdict(nuisance_level(level))}, f, indent=2)


def _nuisance_rng(seed: int) -> torch.Generator:
    """The nuisance's own stream, so ``g`` draws what it draws at ``none``."""
    return torch.Generator().manual_seed(seed + 7_919_000_001)


def benchmark_classes(benchmark: str) -> dict:
    """The classes of a benchmark of ``synthetic_motion.BENCHMARKS``: {name: definition}."""
    if benchmark == "regions":
        return SYNTH_CLASSES
    if benchmark == "motion":
        from .synthetic_motion import MOTION_CLASSES
        return MOTION_CLASSES
    raise ValueError(f"unknown benchmark {benchmark!r}; choose 'motion' or 'regions'")


def write_synthetic_dataset(out: str, n_subjects: int = 8, clips_per_class: int = 3,
                            size: int = 64, fps: int = 30, n_frames: int = 12, seed: int = 0,
                            video: bool = False, progress: bool = True, nuisance: str = "none",
                            benchmark: str = "regions") -> str:
    """Write a synthetic micro-expression set in the CASME II layout:
    ``sub01/EP01_01/img1.jpg ...`` (or ``sub01/EP01_01.mp4`` with ``video``), the sheet
    ``CASME2-coding-synthetic.xlsx``, and the apex motion masks ``masks/sub01/EP01_01.png``.
    Subjects are the first ``n_subjects`` faces of ``face_images``. Returns ``out``.

    ``nuisance`` above ``none`` (``NUISANCE``): every clip carries the level's nuisance, the
    sheet gets the column ``Amplitude`` (px at the apex), ``nuisance.json`` records the
    level, and each subject gets ``round(still * clips_per_class)`` clips of one more class
    ``no_motion`` (the last ``EPcc_*``: ``EP05`` for regions): head motion and nuisance without
    micro-motion, an empty mask. For recognition a class of its own ("did anything move?").

    ``benchmark`` (``synthetic_motion.BENCHMARKS``): ``regions``, the classes of
    ``SYNTH_CLASSES`` (each moves a fixed region: place answers; what earlier versions
    wrote, bit for bit), or ``motion``, the classes of ``MOTION_CLASSES`` (the kind and
    direction of the motion, at a place drawn per clip: see ``synthetic_motion``), which
    always writes the Amplitude column and ``benchmark.json`` (the clips' places)."""
    import os

    import pandas as pd
    from tqdm import tqdm

    from ..console import bar_on
    from .synthetic_motion import draw_motion, write_benchmark_json
    nz = nuisance_level(nuisance)
    classes = benchmark_classes(benchmark)
    regions = benchmark == "regions"
    faces = face_images(size)
    if n_subjects > len(faces):
        raise ValueError(f"at most {len(faces)} subjects (faces shipped with scikit-image)")
    g = torch.Generator().manual_seed(seed)
    gn = None if nz.is_none else _nuisance_rng(seed)
    rows, infos = [], []
    counts = {c: clips_per_class for c in classes}
    if round(nz.still * clips_per_class):
        counts[NO_MOTION] = round(nz.still * clips_per_class)
    todo = [(s, c, k) for s in range(n_subjects) for c in counts for k in range(counts[c])]
    for s, cls, k in tqdm(todo, desc="synth", disable=not bar_on(progress), leave=False):
        subj = f"sub{s + 1:02d}"
        clip = f"EP{list(counts).index(cls) + 1:02d}_{k + 1:02d}"
        info = {"subject": subj, "clip": clip, "class": cls}
        spec = cls if regions or cls == NO_MOTION else draw_motion(cls, g)
        frames, mask, (on, ap, off) = synthetic_clip(faces[s], spec, g, n_frames, fps, nuisance=nz, gn=gn,
                                                     info=info)
        _write_clip(out, subj, clip, frames, mask, fps, video, nz)
        rows.append({"Subject": s + 1, "Filename": clip, "OnsetFrame": on + 1, "ApexFrame": ap + 1,
                     "OffsetFrame": off + 1, "Action Units": "", "Estimated Emotion": cls})
        if gn is not None or not regions:
            rows[-1]["Amplitude"] = round(info["amplitude"], 3)
        infos.append(info)
    pd.DataFrame(rows).to_excel(os.path.join(out, "CASME2-coding-synthetic.xlsx"), index=False)
    level = nuisance if isinstance(nuisance, str) else "custom"
    if gn is not None:
        _write_nuisance(out, level, seed, benchmark)
    if not regions:
        write_benchmark_json(out, benchmark, classes, level, seed, size, infos)
    return out


def write_pretraining_corpus(out: str, faces, clips_per_face: int = 8, size: int = 64,
                             fps: int = 30, n_frames: int = 12, seed: int = 0,
                             video: bool = False, progress: bool = True, nuisance: str = "none") -> str:
    """Unlabeled clips for pre-training: on each face of ``faces`` (indices into
    ``face_images``), ``clips_per_face`` clips whose micro-motion sits anywhere on the face
    in any direction (``random_motion``), so a model cannot learn where motion usually is,
    only what it looks like. Layout ``face007/clip01/img1.jpg`` and ``masks/...``; no sheet.
    ``nuisance`` above ``none``: the level's nuisance on every clip, and as many clips
    without micro-motion as the labeled set has (``still / (4 + still)`` of them)."""
    from tqdm import tqdm

    from ..console import bar_on

    nz = nuisance_level(nuisance)
    pool = face_images(size)
    faces = list(faces)
    if not faces or max(faces) >= len(pool) or min(faces) < 0:
        raise ValueError(f"faces must index the {len(pool)} faces shipped with scikit-image")
    g = torch.Generator().manual_seed(seed)
    gn = None if nz.is_none else _nuisance_rng(seed)
    p_still = nz.still / (len(SYNTH_CLASSES) + nz.still)
    todo = [(f, k) for f in faces for k in range(clips_per_face)]
    for f, k in tqdm(todo, desc="corpus", disable=not bar_on(progress), leave=False):
        cls = random_motion(g)
        if gn is not None and float(torch.rand(1, generator=gn)) < p_still:
            cls = NO_MOTION
        frames, mask, _ = synthetic_clip(pool[f], cls, g, n_frames, fps, nuisance=nz, gn=gn)
        _write_clip(out, f"face{f:03d}", f"clip{k + 1:02d}", frames, mask, fps, video, nz)
    if gn is not None:
        _write_nuisance(out, nuisance if isinstance(nuisance, str) else "custom", seed)
    return out
