"""Reading and writing frames: video files (PyAV) and frame folders (Pillow)."""
from __future__ import annotations

import os
import re
from typing import List, Optional

import numpy as np

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Unreadable or inconsistent input; the message names the file."""


def frame_number(name: str) -> int:
    """The last integer in a file name: img46.jpg, reg_img46.jpg, 046.png -> 46."""
    nums = re.findall(r"\d+", os.path.splitext(os.path.basename(name))[0])
    if not nums:
        raise DataError(f"{name}: no frame number in the file name")
    return int(nums[-1])


def list_frames(folder: str) -> List[str]:
    """Image files of a frame folder in numeric order of their names."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    files = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)]
    if not files:
        raise DataError(f"{folder}: no image files")
    return [os.path.join(folder, f) for f in sorted(files, key=frame_number)]


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:  # grey (SAMM) -> 3 channels
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a)


def read_image(path: str) -> np.ndarray:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            return _rgb(np.asarray(im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB")))
    except Exception as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from e


def read_frames(path: str, indices: Optional[List[int]] = None) -> np.ndarray:
    """A video file or a frame folder -> uint8 (T, H, W, 3).

    Frames of a folder are taken in numeric order of their file names; grey frames
    become 3 channels. ``indices`` (0-based) reads only those frames.
    """
    if os.path.isdir(path):
        files = list_frames(path)
        if indices is not None:
            bad = [i for i in indices if not 0 <= i < len(files)]
            if bad:
                raise DataError(f"{path}: frames {bad} out of range (0..{len(files) - 1})")
            files = [files[i] for i in indices]
        frames = [read_image(f) for f in files]
        odd = [f for f, img in zip(files, frames) if img.shape != frames[0].shape]
        if odd:
            h, w = frames[0].shape[:2]
            raise DataError(f"{odd[0]}: its size differs from {files[0]}'s {w}x{h} "
                            f"({len(odd)} such frame(s) in {path}; every frame must be one size)")
        return np.stack(frames)
    if path.lower().endswith(VIDEO_EXTS):
        return read_video(path, indices)
    raise DataError(f"{path}: neither a frame folder nor a video file ({', '.join(VIDEO_EXTS)})")


def read_video(path: str, indices: Optional[List[int]] = None) -> np.ndarray:
    import av
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such video file")
    want = set(indices) if indices is not None else None
    frames = {}
    try:
        with av.open(path) as c:
            for i, fr in enumerate(c.decode(video=0)):
                if want is None or i in want:
                    frames[i] = fr.to_ndarray(format="rgb24")
                if want is not None and len(frames) == len(want):
                    break
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {e})") from e
    if not frames:
        raise DataError(f"{path}: no decodable frames")
    if want is not None and len(frames) != len(want):
        raise DataError(f"{path}: frames {sorted(want - set(frames))} missing (truncated video?)")
    order = indices if indices is not None else sorted(frames)
    return np.stack([frames[i] for i in order])


def resize_u8(x, size):
    """uint8 frames (..., 3, H, W) -> (..., 3, *size) by area averaging, rounded (a no-op at size)."""
    import torch.nn.functional as F
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    lead = x.shape[:-3]
    y = F.interpolate(x.reshape(-1, *x.shape[-3:]).float(), size=size, mode="area")
    return y.round().clamp(0, 255).to(x.dtype).reshape(*lead, x.shape[-3], *size)


def count_frames(path: str) -> int:
    """Frames of a video (from the stream header, else by demuxing) or of a frame folder."""
    if os.path.isdir(path):
        return len(list_frames(path))
    import av
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such video file")
    try:
        with av.open(path) as c:
            s = c.streams.video[0]
            n = s.frames or sum(1 for p in c.demux(s) if p.size)
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {e})") from e
    if n <= 0:
        raise DataError(f"{path}: no frames")
    return n


def write_video(frames: np.ndarray, path: str, fps: int = 30, codec: str = "libx264",
                crf: int = 10, pix_fmt: Optional[str] = None) -> None:
    """uint8 (T, H, W, 3) -> a video file; a low CRF so 1 px motion survives the codec.
    ``pix_fmt``: e.g. "yuv420p" (a camera's chroma); default full chroma (4:4:4)."""
    import av
    t, h, w, _ = frames.shape
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = pix_fmt or {"libx264": "yuv444p", "libvpx-vp9": "yuv444p", "mjpeg": "yuvj444p"}.get(codec, "yuv420p")
        if codec == "libx264":
            s.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec in ("libvpx-vp9", "libvpx"):  # constant quality (b:v 0 lets crf rule)
            s.options = {"crf": str(crf), "b:v": "0", "deadline": "good", "cpu-used": "4"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
