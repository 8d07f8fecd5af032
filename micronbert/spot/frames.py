"""Where a long video's frames come from (PyAV, or NVIDIA DALI: ``data.dali``), in chunks
with one face box each."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..data.dali import iter_frames_dali
from ..data.io import VIDEO_EXTS, DataError, list_frames, read_image


def iter_frames(path: str):
    """uint8 (H, W, 3) frames of a video file (PyAV, decoded as it goes) or a frame folder."""
    if os.path.isdir(path):
        shape = None
        for f in list_frames(path):
            img = read_image(f)
            shape = shape or img.shape
            if img.shape != shape:
                raise DataError(f"{f}: a {img.shape[1]}x{img.shape[0]} frame in a folder of "
                                f"{shape[1]}x{shape[0]} frames (every frame of a video must be one size)")
            yield img
        return
    if not path.lower().endswith(VIDEO_EXTS):
        raise DataError(f"{path}: neither a frame folder nor a video file ({', '.join(VIDEO_EXTS)})")
    import av
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such video file")
    n = 0
    try:
        with av.open(path) as c:
            for fr in c.decode(video=0):
                n += 1
                yield fr.to_ndarray(format="rgb24")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: corrupt or truncated video after {n} frames "
                        f"({type(e).__name__}: {e})") from e
    if n == 0:
        raise DataError(f"{path}: no decodable frames")


def frame_source(path: str, source: str = "pyav", sequence_length: int = 64):
    """The frames of ``path`` for ``score_video``: None (its default, ``iter_frames``) for
    "pyav", ``iter_frames_dali`` for "dali"."""
    if source == "pyav":
        return None
    if source == "dali":
        return iter_frames_dali(path, sequence_length)
    raise ValueError(f"source must be 'pyav' or 'dali', got {source!r}")


def chunk_box(frames, prev, name):
    """One square face box for a chunk (T, H, W, 3); keeps ``prev`` when the new one moved
    by less than 5 % of its side (no jitter), or when no face is found (None at the start:
    the whole frame, squared)."""
    from ..data.faces import clip_face_box
    idx = np.linspace(0, len(frames) - 1, min(3, len(frames))).round().astype(int)
    sample = frames[torch.from_numpy(idx)].cpu().numpy()  # the CPU detector sees 3 frames
    try:
        box = clip_face_box(sample, samples=3, name=name)
    except DataError:
        box = None
    if box is None:
        if prev is not None:
            return prev, False
        h, w = frames.shape[1:3]
        s = min(h, w)
        return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s), False
    if prev is not None and max(abs(a - b) for a, b in zip(box, prev)) < 0.05 * (prev[2] - prev[0]):
        return prev, True
    return box, True


def chunks(frames, window: int, total: int):
    """``frames`` (uint8 (H, W, 3) frames or (F, H, W, 3) sequences, numpy or torch) as
    torch chunks (T, H, W, 3) of ``window`` frames (the last may be shorter), ``total``
    frames at most."""
    chunk, have, seen = [], 0, 0  # pieces of the next chunk, their frames, frames yielded
    for f in frames:
        if isinstance(f, np.ndarray):  # PyAV's and PIL's arrays (read-only ones copied)
            f = torch.from_numpy(f if f.flags.writeable else f.copy())
        f = f[None] if f.dim() == 3 else f
        while len(f) and seen + have < total:
            take = f[:min(window - have, total - seen - have)]
            chunk.append(take)
            have += len(take)
            f = f[len(take):]
            if have == window:
                yield torch.cat(chunk)
                seen, chunk, have = seen + have, [], 0
        if seen + have >= total:
            break
    if chunk:
        yield torch.cat(chunk)
