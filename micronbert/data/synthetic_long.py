"""Synthetic long videos for spotting: a real face (scikit-image) on a plain background,
with natural nuisance (slow head drift and roll, blinks, illumination drift, sensor noise,
compression) and micro- (0.2-0.5 s) and macro-expressions (0.5-3 s) inserted at known
frames. Written in SAMM Long Videos' layout and sheet format:

    OUT/SAMM_longvideos/001_1/001_1_00001.jpg ...   (or OUT/SAMM_longvideos/001_1.mp4)
    OUT/SAMM_LongVideos_synthetic.xlsx              sheet FACS_Movement_Only, 9 preamble rows
    OUT/synthetic_long.json                          frame rate, size, nuisance, seed

Only the local (non-rigid) expression motion is ground truth; head motion and blinks are
not. Frame numbers in the sheet are 1-based, as in the file names.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from .synthetic import face_images, random_motion, warp_region

SAMM_LONG_COLUMNS = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                     "Duration", "Type", "Action Units", "Notes"]
SAMM_LONG_SHEET = "FACS_Movement_Only"
SAMM_LONG_PREAMBLE = 9  # rows above the header in SAMM-LV's release sheet

# nuisance levels: head drift (px), roll (deg), blinks per second, illumination amplitude
# (fraction), sensor noise (grey levels), JPEG quality / H.264 CRF
NUISANCE = {
    "none": dict(drift=0.0, roll=0.0, blink_rate=0.0, illum=0.0, noise=0.0, quality=100, crf=0),
    "low": dict(drift=1.0, roll=0.5, blink_rate=0.1, illum=0.03, noise=1.0, quality=95, crf=10),
    "medium": dict(drift=3.0, roll=1.5, blink_rate=0.25, illum=0.06, noise=2.0, quality=90, crf=18),
    "high": dict(drift=6.0, roll=3.0, blink_rate=0.4, illum=0.12, noise=4.0, quality=80, crf=23),
}


@dataclass
class Event:
    onset: int  # 0-based frame indices; the displacement is zero at onset and offset
    apex: int
    offset: int
    kind: str  # "micro" | "macro"
    regions: list  # [((y, x) fraction of the face, (dy, dx) px at apex)]


def schedule_events(n_frames: int, fps: float, g: torch.Generator, micro_prob: float = 0.6,
                    micro_s=(0.2, 0.5), macro_s=(0.6, 3.0), gap_s=(1.0, 3.0)) -> List[Event]:
    """Non-overlapping events from 1 s in to 0.5 s before the end, gaps of ``gap_s``."""
    events, t = [], int(round(1.0 * fps))
    while True:
        r = torch.rand(4, generator=g).tolist()
        kind = "micro" if r[0] < micro_prob else "macro"
        lo, hi = micro_s if kind == "micro" else macro_s
        length = max(3, int(round((lo + (hi - lo) * r[1]) * fps)))
        if t + length >= n_frames - int(0.5 * fps):
            break
        n_regions = 1 if kind == "micro" else 2
        mag_lo, mag_hi = (1.0, 2.5) if kind == "micro" else (2.5, 5.0)
        regions = []
        for _ in range(n_regions):
            (cy, cx), (dy, dx) = random_motion(g)
            m = mag_lo + (mag_hi - mag_lo) * float(torch.rand(1, generator=g))
            regions.append(((cy, cx), (m * dy, m * dx)))
        events.append(Event(t, t + length // 2, t + length, kind, regions))
        t += length + int(round((gap_s[0] + (gap_s[1] - gap_s[0]) * r[2]) * fps))
    return events


def _profile(t: int, on: int, off: int) -> float:
    """sin^2 rise and fall over [on, off]: 0 at both ends, 1 at the middle (the apex)."""
    return 0.0 if not on < t < off else math.sin(math.pi * (t - on) / (off - on)) ** 2


def render_long_video(face: torch.Tensor, n_frames: int, fps: float, size: int, events,
                      nuisance: str, g: torch.Generator):
    """uint8 (T, size, size, 3): ``face`` (3, S, S) placed on a plain background with the
    ``events`` rendered as local warps and the nuisance of level ``nuisance``."""
    if nuisance not in NUISANCE:
        raise ValueError(f"unknown nuisance level {nuisance!r}; known: {sorted(NUISANCE)}")
    nz = NUISANCE[nuisance]
    fs = face.shape[-1]
    off0 = (size - fs) // 2
    canvas = torch.full((3, size, size), 96.0)
    canvas[:, off0:off0 + fs, off0:off0 + fs] = face.float()
    r = torch.rand(8, generator=g).tolist()
    periods = [6 + 8 * r[0], 7 + 9 * r[1], 9 + 10 * r[2], 12 + 10 * r[3]]  # seconds
    phases = [2 * math.pi * x for x in r[4:]]
    blinks = []  # (start, length) of each blink
    t = 0
    while nz["blink_rate"] > 0:
        t += int(round(fps * (0.5 + float(torch.empty(1).exponential_(1.0, generator=g)) / nz["blink_rate"])))
        if t >= n_frames:
            break
        blinks.append((t, max(3, int(round(0.15 * fps)))))
    eyes = [(0.40, 0.33), (0.40, 0.67)]
    out = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        img = canvas
        for ev in events:
            a = _profile(t, ev.onset, ev.offset)
            if a > 0:
                for (cy, cx), (dy, dx) in ev.regions:
                    img, _ = warp_region(img, (off0 + fs * cy, off0 + fs * cx), (a * dy, a * dx),
                                         fs * 0.06)
        for b0, bl in blinks:
            a = _profile(t, b0 - 1, b0 + bl)
            if a > 0:  # the upper lid moves down over the eye
                for cy, cx in eyes:
                    img, _ = warp_region(img, (off0 + fs * cy, off0 + fs * cx), (3.0 * a, 0.0), fs * 0.05)
        ts = t / fps
        if nz["drift"] or nz["roll"]:
            dx = nz["drift"] * math.sin(2 * math.pi * ts / periods[0] + phases[0])
            dy = 0.6 * nz["drift"] * math.sin(2 * math.pi * ts / periods[1] + phases[1])
            th = math.radians(nz["roll"]) * math.sin(2 * math.pi * ts / periods[2] + phases[2])
            theta = torch.tensor([[math.cos(th), -math.sin(th), -2 * dx / size],
                                  [math.sin(th), math.cos(th), -2 * dy / size]], dtype=torch.float32)
            grid = F.affine_grid(theta[None], (1, 3, size, size), align_corners=False)
            img = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border",
                                align_corners=False)[0]
        gain = 1 + nz["illum"] * math.sin(2 * math.pi * ts / periods[3] + phases[3])
        img = img * gain
        if nz["noise"]:
            img = img + nz["noise"] * torch.randn(img.shape, generator=g)
        out[t] = img.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return out


@dataclass
class LongSynthConfig:
    n_subjects: int = 4
    videos_per_subject: int = 2
    seconds: float = 30.0
    fps: int = 30
    size: int = 128
    nuisance: str = "medium"
    seed: int = 0
    video: bool = False


def write_synthetic_long(out: str, n_subjects: int = 4, videos_per_subject: int = 2,
                         seconds: float = 30.0, fps: int = 30, size: int = 128,
                         nuisance: str = "medium", seed: int = 0, video: bool = False,
                         progress: bool = True) -> str:
    """Write a synthetic long-video set in SAMM Long Videos' layout and sheet (module doc).
    Subject s is face s of ``face_images``; each video gets its own events and nuisance."""
    import pandas as pd
    from PIL import Image
    from tqdm import tqdm

    from ..console import bar_on

    from .io import write_video
    if nuisance not in NUISANCE:
        raise ValueError(f"unknown nuisance level {nuisance!r}; known: {sorted(NUISANCE)}")
    face_size = int(round(0.75 * size)) // 8 * 8
    faces = face_images(face_size)
    if n_subjects > len(faces):
        raise ValueError(f"at most {len(faces)} subjects (faces shipped with scikit-image)")
    if seconds * fps < 3 * fps:
        raise ValueError(f"--seconds {seconds}: a long video needs at least 3 s")
    cfg = LongSynthConfig(n_subjects, videos_per_subject, seconds, fps, size, nuisance, seed, video)
    n_frames = int(round(seconds * fps))
    root = os.path.join(out, "SAMM_longvideos")
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    rows = [[""] * len(SAMM_LONG_COLUMNS) for _ in range(SAMM_LONG_PREAMBLE)]
    rows[0][0] = "SAMM Long Videos format (synthetic: micronbert synth --long)"
    rows[1][0] = json.dumps(asdict(cfg))
    rows.append(list(SAMM_LONG_COLUMNS))
    todo = [(s, v) for s in range(n_subjects) for v in range(videos_per_subject)]
    for s, v in tqdm(todo, desc="synth --long", disable=not bar_on(progress), leave=False):
        name = f"{s + 1:03d}_{v + 1}"
        events = schedule_events(n_frames, fps, g)
        frames = render_long_video(faces[s], n_frames, fps, size, events, nuisance, g)
        if video:
            write_video(frames, os.path.join(root, name + ".mp4"), fps=fps, crf=NUISANCE[nuisance]["crf"])
        else:
            d = os.path.join(root, name)
            os.makedirs(d, exist_ok=True)
            for t, f in enumerate(frames):
                Image.fromarray(f).save(os.path.join(d, f"{name}_{t + 1:05d}.jpg"),
                                        quality=NUISANCE[nuisance]["quality"], subsampling=0)
        for i, ev in enumerate(events):
            rows.append([s + 1, f"{name}_{i + 1}", v + 1, ev.onset + 1, ev.apex + 1, ev.offset + 1,
                         ev.offset - ev.onset + 1, "Micro - 1/2" if ev.kind == "micro" else "Macro",
                         "", "synthetic"])
    sheet = os.path.join(out, "SAMM_LongVideos_synthetic.xlsx")
    pd.DataFrame(rows).to_excel(sheet, sheet_name=SAMM_LONG_SHEET, index=False, header=False)
    with open(os.path.join(out, "synthetic_long.json"), "w") as f:
        json.dump(asdict(cfg) | {"frames": n_frames, "face_size": face_size}, f, indent=2)
    return out
