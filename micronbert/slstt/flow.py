"""SLSTT's input: optical flow from the ONSET frame to each of T frames sampled in
(onset, offset], as (u, v, magnitude) fields, computed once per clip and cached on disk.

Flow is OpenCV Farneback with the project's one parameter set (``baselines.FARNEBACK``);
TV-L1 where the installed OpenCV has ``cv2.optflow`` (opencv-contrib), else a clear error.
The cache is keyed like the face cache (``data.faces``): the clip's path, its content
signature and every setting that changes the fields; a damaged file is recomputed.
"""
from __future__ import annotations

import hashlib
import os
import sys
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import PairAugment, affine_theta
from ..baselines import FARNEBACK, _grey, farneback_flow
from ..data.io import DataError, read_frames, resize_u8

METHODS = ("farneback", "tvl1")


def tvl1_unavailable_reason() -> Optional[str]:
    """None where the installed OpenCV computes TV-L1, else why not."""
    import cv2
    if hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create"):
        return None
    return (f"TV-L1 flow needs OpenCV's contrib module cv2.optflow (opencv-contrib-python); "
            f"the installed OpenCV {cv2.__version__} has none: use --flow farneback")


def tvl1_flow(onset: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """TV-L1 flow onset -> each frame (uint8 (B, 3, H, W) twice): (B, 3, H, W) = u, v, |(u, v)|."""
    reason = tvl1_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    import cv2
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    a, b = _grey(onset), _grey(frames)
    uv = torch.from_numpy(np.stack([tv.calc(x, y, None) for x, y in zip(a, b)])).permute(0, 3, 1, 2)
    return torch.cat([uv, uv.norm(dim=1, keepdim=True)], 1)


def sample_indices(onset: int, offset: int, t: int) -> list:
    """T frame indices evenly spaced in (onset, offset] (repeats where the clip is shorter)."""
    offset = max(int(offset), int(onset) + 1)
    return np.ceil(np.linspace(onset, offset, t + 1)[1:] - 1e-9).astype(int).tolist()


def flows_from_onset(onset: torch.Tensor, frames: torch.Tensor, method: str = "farneback") -> torch.Tensor:
    """Flow from one onset frame (3, H, W) to each of ``frames`` (T, 3, H, W), uint8:
    (T, 3, H, W) float32 = u (px, +x right), v (px, +y down), magnitude."""
    if method not in METHODS:
        raise ValueError(f"flow method must be one of {METHODS}, got {method!r}")
    fn = farneback_flow if method == "farneback" else tvl1_flow
    return fn(onset.unsqueeze(0).expand_as(frames).contiguous(), frames)


def offset_index(row) -> int:
    """0-based index of a table row's offset frame (the table carries onset/apex indices)."""
    if hasattr(row, "offset_index"):
        return int(row.offset_index)
    from ..data.sheets import frame_numbers
    numbers = frame_numbers(row.path)
    return numbers.index(int(row.offset)) if int(row.offset) in numbers else len(numbers) - 1


def _key(row, size: int, t: int, method: str, face: bool) -> str:
    from ..data.faces import clip_signature
    params = FARNEBACK if method == "farneback" else "tvl1"
    text = (f"{os.path.abspath(row.path)}|{clip_signature(row.path)}|{int(row.onset_index)}|{offset_index(row)}"
            f"|{size}|{t}|{method}|{params}|face={face}")
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _load(f: str, shape) -> Optional[torch.Tensor]:
    """A cached field stack, or None when the file is damaged or of another shape."""
    try:
        x = torch.load(f, map_location="cpu", weights_only=True)
        if isinstance(x, torch.Tensor) and tuple(x.shape) == tuple(shape) and torch.isfinite(x).all():
            return x
    except Exception:  # not a tensor file
        pass
    return None


def clip_flows(row, size: int, t: int, method: str = "farneback", cache_dir: Optional[str] = None,
               face_cache: Optional[str] = None, report=None) -> torch.Tensor:
    """The flow fields of one table row: (T, 3, size, size) float32, onset -> T frames in
    (onset, offset], on frames cropped to the clip's face box (``face_cache``) and resized
    to ``size``. Cached in ``cache_dir`` when given (a damaged file is recomputed and the
    repair counted in ``report``)."""
    f = os.path.join(cache_dir, _key(row, size, t, method, bool(face_cache)) + ".pt") if cache_dir else None
    if f and os.path.exists(f):
        x = _load(f, (t, 3, size, size))
        if x is not None:
            return x
        if report is not None:
            report.add("repaired flow cache (damaged file, recomputed)", f"{f} ({row.path})")
    idx = [int(row.onset_index)] + sample_indices(row.onset_index, offset_index(row), t)
    frames = read_frames(row.path, sorted(set(idx)))
    pos = {k: i for i, k in enumerate(sorted(set(idx)))}
    frames = frames[[pos[k] for k in idx]]
    if face_cache:
        from ..data.faces import cached_face_box, crop_clip
        frames = crop_clip(frames, cached_face_box(row.path, face_cache, frames=frames, report=report))
    u8 = resize_u8(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2), size)
    x = flows_from_onset(u8[0], u8[1:], method).float()
    if f:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{f}.{os.getpid()}.tmp"  # one per process: two runs may fill one cache
        torch.save(x, tmp)
        os.replace(tmp, f)
    return x


def table_flows(table, size: int, t: int, method: str = "farneback", cache_dir: Optional[str] = None,
                face_cache: Optional[str] = None, report=None, progress: bool = True) -> torch.Tensor:
    """``clip_flows`` of every row: (K, T, 3, size, size), with progress on stderr."""
    if method == "tvl1" and tvl1_unavailable_reason():
        raise RuntimeError(tvl1_unavailable_reason())
    out, k = [], len(table)
    for i, row in enumerate(table.itertuples()):
        try:
            out.append(clip_flows(row, size, t, method, cache_dir, face_cache, report))
        except DataError as e:
            raise DataError(f"SLSTT flow of {row.path}: {e}") from e
        if progress and (i + 1 == k or (i + 1) % max(1, k // 10) == 0):
            print(f"[slstt] flow {i + 1}/{k} clips ({method}, T={t}, {size} px"
                  f"{', cache ' + cache_dir if cache_dir else ''})", file=sys.stderr, flush=True)
    return torch.stack(out) if out else torch.zeros(0, t, 3, size, size)


def flow_augment(flows: torch.Tensor, aug: PairAugment, generator: torch.Generator) -> torch.Tensor:
    """flows (B, T, 3, H, W) -> the same, each clip's T fields warped by one random crop,
    rotation and flip (``pair_augment``'s draws), their vectors mapped with the warp: a
    flip negates u, a rotation turns (u, v), a crop of side s scales them by 1 / s; the
    magnitude is recomputed. Colour jitter has no meaning on flow and is not applied."""
    b, t, c, h, w = flows.shape
    r = torch.rand(b, 8, generator=generator).to(flows.device)
    if tuple(aug.crop_scale) == (1.0, 1.0) and not aug.rotate and not aug.flip:
        return flows
    theta = affine_theta(r, aug).to(flows.dtype)  # B 2 3, normalised output -> input coords
    x = flows.flatten(1, 2)  # B T*C H W
    grid = F.affine_grid(theta, [b, t * c, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).view(b, t, c, h, w)
    px = torch.tensor([w / 2, h / 2], dtype=flows.dtype, device=flows.device)
    a = theta[:, :, :2] * px.view(1, 2, 1) / px.view(1, 1, 2)  # the warp's linear part in pixels
    uv = torch.einsum("bij,btjhw->btihw", torch.linalg.inv(a), x[:, :, :2])  # input px -> output px
    return torch.cat([uv, uv.norm(dim=2, keepdim=True)], 2)
