"""Offline face detection and one stable crop per clip, from registry wheels alone
(OpenCV 4.x's bundled Haar cascade), cached as JSON beside nothing else: in ``cache_dir``.

The crop of a clip is the median of the face boxes found on a few of its frames,
enlarged by ``margin`` and made square, so every frame of the clip is cut the same way
(a per-frame box would jitter and look like motion).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Tuple

import numpy as np

from .io import DataError

_CASCADE = []


def _cascade():
    if not _CASCADE:
        try:
            import cv2
        except ImportError as e:
            raise DataError("face cropping needs OpenCV 4.x: pip install 'opencv-python-headless<5' "
                            "(5.x ships no Haar cascades)") from e
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise DataError(f"no Haar cascade at {path} (OpenCV 5.x ships none: use 4.x)")
        _CASCADE.append(c)
    return _CASCADE[0]


def detect_face(frame: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """The largest frontal face in a uint8 (H, W, 3) frame: (x, y, w, h), or None."""
    import cv2
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    side = min(grey.shape)
    faces = _cascade().detectMultiScale(grey, 1.1, 5, minSize=(max(20, side // 8),) * 2)
    if len(faces) == 0:
        return None
    return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))


def clip_face_box(frames: np.ndarray, margin: float = 0.2, samples: int = 5,
                  name: str = "clip") -> Tuple[int, int, int, int]:
    """One square box (x0, y0, x1, y1) for a whole clip (T, H, W, 3)."""
    idx = np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int)
    boxes = [b for b in (detect_face(frames[i]) for i in idx) if b is not None]
    if not boxes:
        raise DataError(f"{name}: no face found")
    x, y, w, h = np.median(np.array(boxes, dtype=np.float64), axis=0)
    cx, cy, side = x + w / 2, y + h / 2, max(w, h) * (1 + 2 * margin)
    hh, ww = frames.shape[1:3]
    side = min(side, hh, ww)
    x0 = int(round(min(max(cx - side / 2, 0), ww - side)))
    y0 = int(round(min(max(cy - side / 2, 0), hh - side)))
    return x0, y0, x0 + int(side), y0 + int(side)


def clip_signature(path: str) -> str:
    """What identifies the clip's content cheaply: size and mtime of the file, or of a
    frame folder's first and last frames and their count."""
    from .io import list_frames
    files = list_frames(path) if os.path.isdir(path) else [path]
    if not files:
        raise DataError(f"{path}: no frames")
    st = [os.stat(f) for f in (files[0], files[-1])]
    return f"{len(files)}|" + "|".join(f"{x.st_size}:{x.st_mtime_ns}" for x in st)


def _read_box(f: str):
    """The box of a cache file: 4 ints (x0, y0, x1, y1) with x0 < x1, y0 < y1; None when the
    file is damaged (not JSON, no box, wrong values)."""
    try:
        with open(f) as fh:
            raw = json.load(fh)["box"]
        box = tuple(int(v) for v in raw)
        if len(box) == 4 and all(isinstance(v, (int, float)) and v == b for v, b in zip(raw, box)) \
                and min(box) >= 0 and box[0] < box[2] and box[1] < box[3]:
            return box
    except Exception:  # not JSON, not a dict with a box, not numbers
        pass
    return None


def cached_face_box(path: str, cache_dir: str, margin: float = 0.2,
                    frames: Optional[np.ndarray] = None, report=None) -> Tuple[int, int, int, int]:
    """``clip_face_box`` of the clip at ``path``, cached in ``cache_dir`` by its path,
    content signature and margin. ``frames`` (T, H, W, 3) saves the decoding when the
    caller has them; on a cache miss without them the clip is read on the CPU.
    A damaged cache file is a cache miss: the box is found again, the file rewritten, and
    the repair counted in ``report`` (a DataReport) when given."""
    from .io import read_frames
    key = hashlib.sha1(f"{os.path.abspath(path)}|{clip_signature(path)}|{margin}".encode()).hexdigest()[:16]
    f = os.path.join(cache_dir, f"{key}.json")
    if os.path.exists(f):
        box = _read_box(f)
        if box is not None:
            return box
        if report is not None:
            report.add("repaired face cache (damaged file, recomputed)", f"{f} ({path})")
    box = clip_face_box(read_frames(path) if frames is None else frames, margin, name=path)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"path": path, "box": box}, fh)
    os.replace(tmp, f)
    return box


def crop_clip(frames: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return frames[:, y0:y1, x0:x1]
