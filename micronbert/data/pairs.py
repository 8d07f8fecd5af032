"""Pre-training pairs (I_t, I_{t+d}) from videos and frame folders (CPU loader).

Every sample is a pure function of (seed, epoch, global index): the clip, t, d and the PoI
crop's random numbers; the swap masks of a global batch (all ranks' batches together) come
from one vectorised draw seeded by (seed, epoch, global batch). So the samples are the same
whatever the number of ranks at the same global batch (rank r takes the r-th slice of
each global batch) and a loader resumes exactly from (epoch, position).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..kernels import generate_swap_mask
from .io import IMAGE_EXTS, VIDEO_EXTS, DataError, count_frames, read_frames, resize_u8


def find_clips(root: str) -> List[str]:
    """Video files and frame folders under ``root`` (sorted)."""
    clips = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        if any(f.lower().endswith(IMAGE_EXTS) for f in files) and os.path.basename(d) != "masks" \
                and "masks" not in os.path.relpath(d, root).split(os.sep):
            clips.append(d)
        clips += [os.path.join(d, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTS)]
    if not clips:
        raise DataError(f"{root}: no videos or frame folders")
    return sorted(clips)


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_000_007 + index)


class PairLoader:
    """Batches of pairs for pre-training, on the CPU.

    Yields dicts: ``frame_t``, ``frame_next`` uint8 (B, 3, S, S); ``swap_mask`` bool (B, N);
    ``crop_rand`` (B, 4) for the PoI crop; ``index`` (B,) global sample indices.
    ``report`` counts what was skipped (``on_error="skip"``).
    """

    def __init__(self, clips: Sequence[str], size: int, batch_size: int, patch_size: int = 8,
                 delta: Tuple[int, int] = (1, 4), seed: int = 0, rank: int = 0, world_size: int = 1,
                 mask_type: str = "block", swap_ratio: float = 0.5, samples_per_epoch: Optional[int] = None,
                 on_error: str = "raise", cache_clips: int = 64, face_cache: Optional[str] = None,
                 workers: int = 1):
        if not clips:
            raise DataError("no clips to sample from")
        if batch_size % 1 or batch_size <= 0:
            raise ValueError("batch_size must be a positive int")
        self.clips, self.size, self.batch_size, self.p = list(clips), size, batch_size, patch_size
        self.delta, self.seed, self.rank, self.world = delta, seed, rank, world_size
        self.mask_type, self.ratio, self.on_error = mask_type, swap_ratio, on_error
        self.samples_per_epoch = samples_per_epoch or len(self.clips) * 8
        self.epoch, self.position = 0, 0  # position: batches of this rank already yielded
        self.report = {"samples": 0, "skipped": 0, "errors": []}
        self._cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._lengths = {}
        self._cache_n = cache_clips
        self.face_cache = face_cache  # a folder: crop every clip to its face (one box per clip)
        self._boxes = {}
        self.workers = workers  # decoding threads (PIL and PyAV release the GIL)
        self._pool = None

    # ---------------------------------------------------------------- state
    def __len__(self):  # batches per epoch, per rank
        return self.samples_per_epoch // (self.batch_size * self.world)

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, s):
        self.epoch, self.position = int(s["epoch"]), int(s["position"])

    # ---------------------------------------------------------------- samples
    def face_box(self, path, frames=None):
        """The clip's face box (x0, y0, x1, y1), from the face cache (detected on a miss)."""
        if path not in self._boxes:
            from .faces import cached_face_box
            self._boxes[path] = cached_face_box(path, self.face_cache, frames=frames)
        return self._boxes[path]

    def _crop(self, clip, frames):  # (T, H, W, 3) -> the clip's face, when face crops are on
        from .faces import crop_clip
        return crop_clip(frames, self.face_box(clip, frames)) if self.face_cache else frames

    def _frames(self, path):
        """The whole clip, face-cropped; kept in an LRU of ``cache_clips`` clips."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        frames = self._crop(path, read_frames(path))
        if self._cache_n:
            self._cache[path] = frames
            if len(self._cache) > self._cache_n:
                self._cache.popitem(last=False)
        return frames

    def _resize(self, f) -> torch.Tensor:  # (H, W, 3) uint8, numpy or torch -> (3, S, S)
        x = torch.as_tensor(np.ascontiguousarray(f) if isinstance(f, np.ndarray) else f)
        return resize_u8(x.permute(2, 0, 1), self.size)

    def _check_clip(self, clip):
        """Catch a bad clip when it is chosen, so ``on_error="skip"`` can replace it: decode
        it (cached loaders; the face box comes with it) or find its face box (face crops)."""
        if self._cache_n:
            self._frames(clip)
        elif self.face_cache:
            self.face_box(clip)

    def _length(self, clip):
        if clip not in self._lengths:
            self._lengths[clip] = count_frames(clip)
        return self._lengths[clip]

    def choose(self, epoch: int, index: int):
        """The sample at global ``index`` of ``epoch``: (clip, t, d, crop_rand), no decoding."""
        g = _sample_generator(self.seed, epoch, index)
        clip = self.clips[int(torch.randint(len(self.clips), (1,), generator=g))]
        t_len = self._length(clip)
        lo, hi = self.delta
        if t_len < 2:
            raise DataError(f"{clip}: {t_len} frame(s), a pair needs 2")
        d = int(torch.randint(lo, min(hi, t_len - 1) + 1, (1,), generator=g)) if t_len - 1 >= lo else t_len - 1
        t = int(torch.randint(0, t_len - d, (1,), generator=g))
        return clip, t, d, torch.rand(4, generator=g)

    def sample(self, epoch: int, index: int):
        """Decoded: (frame_t, frame_next, crop_rand, (clip, t, d))."""
        clip, t, d, crop = self.choose(epoch, index)
        frames = self._frames(clip)
        return self._resize(frames[t]), self._resize(frames[t + d]), crop, (clip, t, d)

    def _pair(self, spec):
        clip, t, d = spec
        if self._cache_n == 0:  # no cache: decode the two frames only
            a, b = self._crop(clip, read_frames(clip, [t, t + d]))
        else:
            frames = self._frames(clip)
            a, b = frames[t], frames[t + d]
        return self._resize(a), self._resize(b)

    def decode(self, specs):
        """Frames of a batch of chosen samples: uint8 (B, 3, S, S) twice (CPU decoding)."""
        if self.workers > 1 and self._cache_n == 0:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self._pool = ThreadPoolExecutor(self.workers)
            pairs = list(self._pool.map(self._pair, specs))
        else:
            pairs = [self._pair(s) for s in specs]
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    def masks(self, epoch: int, global_batch: int) -> torch.Tensor:
        """Swap masks of this rank's slice of a global batch: bool (B, N)."""
        g = _sample_generator(self.seed, epoch, -1 - global_batch)
        m = generate_swap_mask(self.mask_type, self.batch_size * self.world, self.size // self.p,
                               self.ratio, g)
        return m[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def __iter__(self):
        n = len(self)
        while True:
            if self.position >= n:
                self.epoch, self.position = self.epoch + 1, 0
                return
            b0 = (self.position * self.world + self.rank) * self.batch_size
            specs, crops = [], []
            for i in range(b0, b0 + self.batch_size):
                j = i
                while True:
                    try:
                        clip, t, d, c = self.choose(self.epoch, j)
                        self._check_clip(clip)
                        break
                    except DataError as e:
                        if self.on_error == "raise":
                            raise
                        self.report["skipped"] += 1
                        self.report["errors"].append(str(e))
                        j += self.samples_per_epoch  # a deterministic replacement
                specs.append((clip, t, d))
                crops.append(c)
                self.report["samples"] += 1
            ft, fn = self.decode(specs)
            batch = {"frame_t": ft, "frame_next": fn, "crop_rand": torch.stack(crops),
                     "index": torch.arange(b0, b0 + self.batch_size),
                     "swap_mask": self.masks(self.epoch, self.position)}
            self.position += 1
            yield batch


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
    """

    def __init__(self, *args, device: Optional[str] = None, num_threads: int = 2, **kw):
        super().__init__(*args, **kw)
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as e:
            raise ImportError("DaliPairLoader needs NVIDIA DALI: pip install nvidia-dali-cuda120 "
                              "(or the extra micronbert-fused[dali])") from e
        self.device = device or ("gpu" if torch.cuda.is_available() else "cpu")
        if self.device == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("DaliPairLoader(device='gpu') needs CUDA; this machine has none")
        kinds = {os.path.isdir(c) for c in self.clips}
        if len(kinds) != 1:
            raise DataError("DaliPairLoader takes clips of one kind: all frame folders or all videos")
        self.video = kinds == {False}
        self.num_threads = num_threads
        self._pipe = None
        self._cache_n = 0  # DALI decodes in the pipeline (its errors name the batch's files)

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
        if self.device == "gpu":
            from nvidia.dali.plugin.pytorch import feed_ndarray
            t = tl[i]
            out = torch.empty(t.shape(), dtype=torch.uint8, device="cuda")
            feed_ndarray(t, out)
            return out
        return torch.from_numpy(np.array(tl[i]))

    def decode(self, specs):
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
                ft = [self._resize(s[0]) for s in pairs]
                fn_ = [self._resize(s[1]) for s in pairs]
            else:
                from .io import list_frames
                files = []
                for c, t, d in specs:
                    names = list_frames(c)
                    files.append((names[t], names[t + d]))
                p.feed_input("a", [np.fromfile(a, dtype=np.uint8) for a, _ in files])
                p.feed_input("b", [np.fromfile(b, dtype=np.uint8) for _, b in files])
                oa, ob = p.run()
                ft = [self._resize(self._to_torch(oa, i)) for i in range(len(specs))]
                fn_ = [self._resize(self._to_torch(ob, i)) for i in range(len(specs))]
        except DataError:
            raise
        except Exception as e:
            self._pipe = None
            raise DataError(f"DALI could not decode the batch {sorted({c for c, _, _ in specs})}: "
                            f"{type(e).__name__}: {str(e)[:300]}") from e
        return torch.stack(ft), torch.stack(fn_)
