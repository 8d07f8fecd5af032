"""NVIDIA DALI decoding: ``DaliPairLoader`` (the pre-training pairs of ``PairLoader``,
decoded by a DALI pipeline) and ``iter_frames_dali`` (a long video's frames in sequences,
for spotting), and the helpers they share. DALI is imported when asked for, never at
import time."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from .io import VIDEO_EXTS, DataError, count_frames, list_frames
from .pairs import Memo, PairLoader


def dali_device(device: Optional[str], who: str) -> str:
    """Checks that NVIDIA DALI is installed (imported here, not at import time) and returns
    DALI's device: ``device`` ("gpu" or "cpu"), by default "gpu" where CUDA is."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        from ..install import install_hint
        raise ImportError(f"{who} needs NVIDIA DALI: pip install nvidia-dali-cuda120 "
                          f"(or {install_hint('dali')})") from e
    device = device or ("gpu" if torch.cuda.is_available() else "cpu")
    if device not in ("gpu", "cpu"):
        raise ValueError(f"{who}: device must be 'gpu' or 'cpu', got {device!r}")
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(f"{who}(device='gpu') needs CUDA; this machine has none")
    return device


def dali_to_torch(tl, i: int, device: str) -> torch.Tensor:
    """Sample ``i`` of a DALI TensorList as a torch uint8 tensor: on the GPU (copied on the
    device) for a "gpu" pipeline, else on the CPU."""
    if device == "gpu":
        from nvidia.dali.plugin.pytorch import feed_ndarray
        t = tl[i]
        out = torch.empty(t.shape(), dtype=torch.uint8, device="cuda")
        feed_ndarray(t, out)
        return out
    return torch.from_numpy(np.array(tl[i]))


class DaliPairLoader(PairLoader):
    """The same samples as ``PairLoader``, decoded by an NVIDIA DALI pipeline.

    On a GPU (``device="gpu"``) JPEG frames are decoded by nvJPEG and videos (H.264, HEVC,
    VP8/9, AV1, MJPEG) by NVDEC in DALI's ``mixed`` backend, and the batch comes out as
    CUDA uint8 tensors, resized on the device, ready for the fused swap kernel (which
    normalises). With ``face_cache`` each clip's face box (found once on the CPU by
    OpenCV, then cached) crops the frames inside the pipeline: ROI decoding for JPEG, a
    slice for video. Without a GPU the same pipeline runs on the CPU where DALI can: JPEG
    frames, and VP8/VP9/MJPEG video. All clips of one loader are frame folders, or all
    are videos. Pixels agree with ``PairLoader`` within codec rounding.

    Prefetching is ``PairLoader``'s: the pipeline runs on the prefetching thread (one per
    loader); ``workers`` threads choose the samples and find their face boxes, and
    ``num_threads`` (default: ``workers``, at least 2) are DALI's CPU threads.
    """

    def __init__(self, *args, device: Optional[str] = None, num_threads: Optional[int] = None, **kw):
        super().__init__(*args, **kw)
        self.device = dali_device(device, "DaliPairLoader")
        kinds = {os.path.isdir(c) for c in self.clips}
        if len(kinds) != 1:
            raise DataError("DaliPairLoader takes clips of one kind: all frame folders or all videos")
        self.video = kinds == {False}
        self.num_threads = num_threads or max(2, self.workers)
        self._pipe = None
        self.cache_clips = 0  # DALI decodes in the pipeline (its errors name the batch's files)
        self._clips = Memo(0)

    def _build(self):
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        dev = "mixed" if self.device == "gpu" else "cpu"
        pipe = dali.Pipeline(batch_size=self.batch_size, num_threads=self.num_threads,
                             device_id=torch.cuda.current_device() if self.device == "gpu" else None,
                             prefetch_queue_depth=1)
        crop = dict(axis_names="WH", normalized_anchor=False, normalized_shape=False)
        with pipe:
            if self.face_cache:  # the face box of each sample's clip: (x0, y0) and (w, h)
                anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
                shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
            if self.video:
                enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                start = fn.external_source(name="start", dtype=types.INT32, ndim=0)
                stride = fn.external_source(name="stride", dtype=types.INT32, ndim=0)
                seq = fn.decoders.video(enc, device=dev, start_frame=start, stride=stride,
                                        sequence_length=2)
                pipe.set_outputs(fn.slice(seq, anchor, shape, **crop) if self.face_cache else seq)
            else:
                a = fn.external_source(name="a", dtype=types.UINT8, ndim=1)
                b = fn.external_source(name="b", dtype=types.UINT8, ndim=1)
                if self.face_cache:  # ROI decoding: only the face is decoded
                    pipe.set_outputs(*(fn.decoders.image_slice(x, anchor, shape, device=dev,
                                                               output_type=types.RGB, **crop)
                                       for x in (a, b)))
                else:
                    pipe.set_outputs(fn.decoders.image(a, device=dev, output_type=types.RGB),
                                     fn.decoders.image(b, device=dev, output_type=types.RGB))
        pipe.build()
        self._pipe = pipe

    def _to_torch(self, tl, i):
        return dali_to_torch(tl, i, self.device)

    _decode_when_checked = False  # the pipeline decodes the batch

    def make_batch(self, epoch: int, position: int, cpu: bool = False):
        """As ``PairLoader.make_batch``; when the pipeline fails on a batch, its samples are
        decoded again on the CPU to find the bad file: one bad file raises a DataError naming
        it (``on_error="raise"``) or is replaced and counted (``"skip"``; that batch then comes
        decoded on the CPU). A failure the CPU cannot reproduce raises the pipeline's error."""
        picked = self._pick(epoch, position, cpu)
        try:
            return self._assemble(epoch, position, picked, cpu)
        except _PipelineFailed as failed:
            again = self._pick(epoch, position, cpu=True)  # raises on a bad file with "raise"
            if sum(len(e) for _, _, e, _ in again) == sum(len(e) for _, _, e, _ in picked):
                raise failed.error from failed.error.__cause__  # every sample decodes on the CPU
            return self._assemble(epoch, position, again, cpu=True)

    def decode(self, specs, pairs=None):
        if self._pipe is None:
            self._build()
        p = self._pipe
        try:
            if self.face_cache:  # boxes are found once per clip on the CPU, then cached
                boxes = [self.face_box(c) for c, _, _ in specs]
                p.feed_input("anchor", [np.array(b[:2], np.int32) for b in boxes])
                p.feed_input("shape", [np.array([b[2] - b[0], b[3] - b[1]], np.int32) for b in boxes])
            if self.video:
                p.feed_input("enc", [np.fromfile(c, dtype=np.uint8) for c, _, _ in specs])
                p.feed_input("start", [np.int32(t) for _, t, _ in specs])
                p.feed_input("stride", [np.int32(d) for _, _, d in specs])
                (seq,) = p.run()
                pairs = [self._to_torch(seq, i) for i in range(len(specs))]
                ft, fn_ = self._resize_all([s[0] for s in pairs]), self._resize_all([s[1] for s in pairs])
            else:
                from .io import list_frames
                files = []
                for c, t, d in specs:
                    names = list_frames(c)
                    files.append((names[t], names[t + d]))
                p.feed_input("a", [np.fromfile(a, dtype=np.uint8) for a, _ in files])
                p.feed_input("b", [np.fromfile(b, dtype=np.uint8) for _, b in files])
                oa, ob = p.run()
                ft = self._resize_all([self._to_torch(oa, i) for i in range(len(specs))])
                fn_ = self._resize_all([self._to_torch(ob, i) for i in range(len(specs))])
        except DataError:
            raise
        except Exception as e:
            self._pipe = None
            err = DataError(f"DALI could not decode the batch {sorted({c for c, _, _ in specs})}: "
                            f"{type(e).__name__}: {str(e)[:300]}")
            err.__cause__ = e
            raise _PipelineFailed(err) from e
        return ft, fn_


class _PipelineFailed(Exception):
    """The DALI pipeline failed on a batch (``error``: the DataError to raise when the CPU
    decodes every sample of it)."""

    def __init__(self, error: DataError):
        super().__init__(str(error))
        self.error = error


DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")  # what DALI decodes without a GPU


def _video_codec(path: str) -> str:
    import av
    try:
        with av.open(path) as c:
            return c.streams.video[0].codec_context.name
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {e})") from e


def iter_frames_dali(path: str, sequence_length: int = 64, device: Optional[str] = None,
                     num_threads: int = 2):
    """The frames of ``iter_frames`` (same order, uint8 (H, W, 3) layout), decoded by NVIDIA
    DALI and yielded in sequences: torch uint8 (F, H, W, 3) with F <= ``sequence_length``.

    ``device="gpu"`` (default where CUDA is): a video is streamed through NVDEC
    (``fn.experimental.inputs.video``, the whole file fed once, one sequence per run) and
    a frame folder through nvJPEG; the frames stay on the GPU. ``"cpu"``: DALI's CPU
    decoders, which read VP8, VP9 and MJPEG video (not H.264 or HEVC) and image files.
    Checked when called (DALI installed, the codec on the CPU: errors naming the file);
    decoded as the sequences are taken.
    """
    device = dali_device(device, "iter_frames_dali")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    folder = os.path.isdir(path)
    total = count_frames(path)  # also: a missing or unreadable file is a DataError
    if not folder:
        if not path.lower().endswith(VIDEO_EXTS):
            raise DataError(f"{path}: neither a frame folder nor a video file ({', '.join(VIDEO_EXTS)})")
        codec = _video_codec(path)
        if device == "cpu" and codec not in DALI_CPU_CODECS:
            raise DataError(f"{path}: {codec} video, which DALI decodes only on a GPU; on this "
                            f"machine drop --dali, or re-encode with VP9 (ffmpeg -i IN -c:v "
                            f"libvpx-vp9 -crf 20 -b:v 0 OUT.webm)")
    return _dali_sequences(path, folder, total, sequence_length, device, num_threads)


def _dali_sequences(path, folder, total, sequence_length, device, num_threads):
    import nvidia.dali as dali
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    dev = "mixed" if device == "gpu" else "cpu"
    pipe = dali.Pipeline(batch_size=sequence_length if folder else 1, num_threads=num_threads,
                         device_id=torch.cuda.current_device() if device == "gpu" else None,
                         prefetch_queue_depth=1)
    with pipe:
        if folder:  # one image per sample: a batch is a sequence
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
            pipe.set_outputs(fn.decoders.image(enc, device=dev, output_type=types.RGB))
        else:
            pipe.set_outputs(fn.experimental.inputs.video(
                name="enc", sequence_length=sequence_length, device=dev,
                last_sequence_policy="partial"))
    pipe.build()
    n = 0
    try:
        if folder:
            files = list_frames(path)
            for s in range(0, len(files), sequence_length):
                part = files[s:s + sequence_length]
                pipe.feed_input("enc", [np.fromfile(f, dtype=np.uint8) for f in part])
                (out,) = pipe.run()
                seq = torch.stack([dali_to_torch(out, i, device) for i in range(len(part))])
                n += len(seq)
                yield seq
            return
        pipe.feed_input("enc", [np.fromfile(path, dtype=np.uint8)])
        while n < total:
            (out,) = pipe.run()
            seq = dali_to_torch(out, 0, device)
            n += len(seq)
            yield seq
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: DALI could not decode it after {n} of {total} frames "
                        f"({type(e).__name__}: {str(e)[:300]})") from e
