"""Pre-training pairs (I_t, I_{t+d}) from videos and frame folders (CPU loader).

Every sample is a pure function of (seed, epoch, global index): the clip, t, d and the PoI
crop's random numbers; the swap masks of a global batch (all ranks' batches together) come
from one vectorised draw seeded by (seed, epoch, global batch). So the samples are the same
whatever the number of ranks at the same global batch (rank r takes the r-th slice of
each global batch) and a loader resumes exactly from (epoch, position).

Batches are made ahead on a background thread (``prefetch``), the samples of a batch on a
pool of ``workers`` threads, into pinned memory on CUDA; what the consumer receives, and the
loader's state and report, are the same as without them.
"""
from __future__ import annotations

import itertools
import os
import queue
import threading
import warnings
from collections import OrderedDict
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..kernels import generate_swap_mask
from .io import IMAGE_EXTS, VIDEO_EXTS, DataError, count_frames, read_frames, resize_u8
from .paths import is_inside
from .report import DataReport

# ``on_error="skip"``: a sample whose clip cannot be read is replaced by another draw among
# the clips not known to be bad; after this many consecutive failed draws for one sample that
# find no new bad clip (or once every clip has failed) the loader stops with a DataError
MAX_FAILED_DRAWS = 50
# the loader's report keeps this many error messages (and counts all of them)
KEEP_ERRORS = 5


def find_clips(root: str, report: Optional[DataReport] = None) -> List[str]:
    """Video files and frame folders under ``root`` (sorted). Symlinks are followed while
    they stay inside ``root`` (``data/paths.py``'s rule, that of the sheet readers); one
    that leads outside is skipped, counted in ``report`` as "skipped clip (outside --data)"."""
    clips, seen = [], {os.path.realpath(root)}

    def keep(path):
        if is_inside(root, path):
            return True
        if report is not None:
            report.add("skipped clip (outside --data)", f"{path} -> {os.path.realpath(path)}")
        return False
    for d, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for x in sorted(dirs):  # each real folder once: no loop, no clip twice through links
            real = os.path.realpath(os.path.join(d, x))
            if real not in seen and keep(os.path.join(d, x)):
                seen.add(real)
                kept.append(x)
        dirs[:] = kept
        if any(f.lower().endswith(IMAGE_EXTS) for f in files) and os.path.basename(d) != "masks" \
                and "masks" not in os.path.relpath(d, root).split(os.sep):
            clips.append(d)
        clips += [os.path.join(d, f) for f in sorted(files)
                  if f.lower().endswith(VIDEO_EXTS) and keep(os.path.join(d, f))]
    if not clips:
        raise DataError(f"{root}: no videos or frame folders")
    return sorted(clips)


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_000_007 + index)


def _pinning(pin_memory: Optional[bool]) -> bool:
    """Whether batches are pinned: as asked, by default when CUDA is available; never without."""
    cuda = torch.cuda.is_available()
    if pin_memory and not cuda:
        warnings.warn("pin_memory=True, but CUDA is not available: batches are not pinned")
    return cuda and (pin_memory is None or bool(pin_memory))


class Memo:
    """A thread-safe memo: ``get(key, compute)`` computes each key once, even when several
    threads ask for it at the same time (the others wait for that result).

    ``capacity``: None keeps everything, 0 nothing, n the n most recently used keys.
    ``max_bytes``: also at most this many bytes of values (``nbytes`` of a tensor or array;
    the most recent value is kept even when it alone is larger).
    A failed ``compute`` is not kept: the next caller tries again (and fails with its error).
    """

    def __init__(self, capacity: Optional[int] = None, max_bytes: Optional[int] = None):
        self.capacity, self.max_bytes, self.bytes = capacity, max_bytes, 0
        self._done: "OrderedDict" = OrderedDict()
        self._busy = {}  # key -> Event, set when the thread computing it is done
        self._lock = threading.Lock()

    def get(self, key, compute: Callable):
        if self.capacity == 0:
            return compute()
        while True:
            with self._lock:
                if key in self._done:
                    self._done.move_to_end(key)
                    return self._done[key]
                busy = self._busy.get(key)
                if busy is None:
                    self._busy[key] = threading.Event()
                    break
            busy.wait()  # another thread decodes it: take its result (or retry if it failed)
        try:
            value = compute()
            with self._lock:
                self._done[key] = value
                self.bytes += getattr(value, "nbytes", 0)
                while len(self._done) > 1 and (
                        (self.capacity is not None and len(self._done) > self.capacity)
                        or (self.max_bytes is not None and self.bytes > self.max_bytes)):
                    self.bytes -= getattr(self._done.popitem(last=False)[1], "nbytes", 0)
        finally:
            with self._lock:
                self._busy.pop(key).set()
        return value


class _Producer:
    """Runs an iterator on a background thread, at most ``depth`` items ahead of the consumer.

    Iterating yields its items in order and raises its exception, if any; ``close`` stops
    the thread (after the item it is preparing) and waits for it. The thread works on the
    consumer's CUDA device (``set_device`` is per thread), for pinning and for DALI.
    """

    def __init__(self, items: Iterator, depth: int, name: str):
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        cuda = torch.cuda.current_device() if torch.cuda.is_initialized() else None
        self._thread = threading.Thread(target=self._run, args=(items, cuda), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterator, cuda: Optional[int]):
        try:
            if cuda is not None:
                torch.cuda.set_device(cuda)
            for item in items:
                self._queue.put(("item", item))
                if self._stop.is_set():
                    return
            self._queue.put(("end", None))
        except BaseException as e:  # raised again in the consumer
            self._queue.put(("error", e))

    def __iter__(self):
        while not self._stop.is_set():
            kind, item = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
        raise RuntimeError("this iterator was closed: a newer iter() of its loader took over")

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:  # empty the queue, so that a producer blocked on a full one can finish
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(0.01)


class PairLoader:
    """Batches of pairs for pre-training, prepared on the CPU.

    Yields dicts: ``frame_t``, ``frame_next`` uint8 (B, 3, S, S); ``swap_mask`` bool (B, N);
    ``crop_rand`` (B, 4) for the PoI crop; ``index`` (B,) global sample indices.
    ``report`` counts the samples handed out and what was skipped (``on_error="skip"``), with
    the first ``KEEP_ERRORS`` error messages; ``data_report`` (a DataReport) counts and names
    every skip and repair (a damaged face-cache file) by kind. With ``on_error="skip"`` a bad
    sample is replaced by the next deterministic draw; ``MAX_FAILED_DRAWS`` consecutive
    failures for one sample, or every clip failing, stop the loader with a DataError.

    Args:
        cache_clips: decoded clips kept (LRU; 0: decode the two frames of each pair only;
            None: as many as ``cache_mb`` holds).
        cache_mb: at most this many MiB of decoded, resized clips kept (the LRU's bound in
            bytes; the default holds every clip of a small corpus, so that each clip is
            decoded once, not once per pair drawn from it).
        workers: threads that choose, check and decode the samples of a batch (PIL, PyAV
            and DALI release the GIL); 1 decodes them one after the other.
        prefetch: batches a background thread prepares ahead of the consumer (0: each batch
            is made when asked for, on the consumer's thread).
        pin_memory: batch tensors in pinned memory, so ``.to("cuda", non_blocking=True)``
            overlaps; None: when CUDA is available (never without CUDA).

    The batches, ``report`` and ``state_dict`` do not depend on ``workers`` or ``prefetch``:
    they count the batches the consumer received, not those prepared ahead (so do the
    skips in ``data_report``; its face-cache repairs are counted when they are made).
    """

    def __init__(self, clips: Sequence[str], size: int, batch_size: int, patch_size: int = 8,
                 delta: Tuple[int, int] = (1, 4), seed: int = 0, rank: int = 0, world_size: int = 1,
                 mask_type: str = "block", swap_ratio: float = 0.5, samples_per_epoch: Optional[int] = None,
                 on_error: str = "raise", cache_clips: Optional[int] = None, face_cache: Optional[str] = None,
                 workers: int = 1, prefetch: int = 2, pin_memory: Optional[bool] = None,
                 cache_mb: float = 2048):
        if not clips:
            raise DataError("no clips to sample from")
        if batch_size % 1 or batch_size <= 0:
            raise ValueError("batch_size must be a positive int")
        if prefetch < 0:
            raise ValueError("prefetch must be >= 0")
        self.clips, self.size, self.batch_size, self.p = list(clips), size, batch_size, patch_size
        self.delta, self.seed, self.rank, self.world = delta, seed, rank, world_size
        self.mask_type, self.ratio, self.on_error = mask_type, swap_ratio, on_error
        self.samples_per_epoch = samples_per_epoch or len(self.clips) * 8
        self.epoch, self.position = 0, 0  # position: batches of this rank handed out
        self.report = {"samples": 0, "skipped": 0, "errors": []}
        self.data_report = DataReport(KEEP_ERRORS)
        self._bad = {}  # clip -> its error: a clip that failed once is not decoded again
        self.cache_clips = cache_clips
        self._clips, self._lengths, self._boxes = Memo(cache_clips, int(cache_mb * 2 ** 20)), Memo(), Memo()
        self.face_cache = face_cache  # a folder: crop every clip to its face (one box per clip)
        self.workers, self.prefetch = workers, prefetch
        self.pin_memory = _pinning(pin_memory)
        self._pool = None  # the decoding threads, made on first use
        self._producer = None  # the prefetching thread of the live iterator

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
        from .faces import cached_face_box
        return self._boxes.get(path, lambda: cached_face_box(path, self.face_cache, frames=frames,
                                                             report=self.data_report))

    def _crop(self, clip, frames):  # (T, H, W, 3) -> the clip's face, when face crops are on
        from .faces import crop_clip
        return crop_clip(frames, self.face_box(clip, frames)) if self.face_cache else frames

    def _frames(self, path):
        """The whole clip, face-cropped and resized: uint8 (T, 3, S, S), kept in an LRU of
        ``cache_clips`` clips and ``cache_mb`` MiB (a cached clip costs no decoding and no resizing)."""
        return self._clips.get(path, lambda: self._resize(self._crop(path, self._whole(path))))

    def _whole(self, path):
        """Every frame of a clip, checked against the length its header promised (a video cut
        at a packet boundary decodes fewer frames than its header says)."""
        frames = read_frames(path)
        if len(frames) < self._length(path):
            raise DataError(f"{path}: the header promises {self._length(path)} frames, only "
                            f"{len(frames)} decode (a truncated video?)")
        return frames

    def _resize(self, f) -> torch.Tensor:
        """uint8 frames (..., H, W, 3), numpy or torch -> (..., 3, S, S), 16 frames at a time."""
        x = torch.as_tensor(np.ascontiguousarray(f) if isinstance(f, np.ndarray) else f).movedim(-1, -3)
        if x.dim() == 3:
            return resize_u8(x, self.size)
        return torch.cat([resize_u8(c, self.size) for c in x.split(16)])

    def _resize_all(self, frames) -> torch.Tensor:
        """uint8 frames (H, W, 3) -> (n, 3, S, S); frames of one shape are resized together."""
        if len({tuple(f.shape) for f in frames}) == 1:
            return self._resize(torch.stack([torch.as_tensor(f) for f in frames]))
        return torch.stack([self._resize(f) for f in frames])

    def _check_clip(self, clip):
        """Catch a bad clip when it is chosen, so ``on_error="skip"`` can replace it: decode
        it (cached loaders; the face box comes with it) or find its face box (face crops).
        A clip that failed once fails again at once, with its first error."""
        if clip in self._bad:
            raise DataError(self._bad[clip])
        try:
            if self.cache_clips != 0:
                self._frames(clip)
            elif self.face_cache:
                self.face_box(clip)
        except DataError as e:
            self._bad[clip] = str(e)
            raise

    def _length(self, clip):
        return self._lengths.get(clip, lambda: count_frames(clip))

    def choose(self, epoch: int, index: int):
        """The sample at global ``index`` of ``epoch``: (clip, t, d, crop_rand), no decoding."""
        g = _sample_generator(self.seed, epoch, index)
        clip = self.clips[int(torch.randint(len(self.clips), (1,), generator=g))]
        if clip in self._bad and self.on_error == "skip":  # a known-bad clip is never drawn again:
            # the first clip not known bad in this sample's own order (the first good one, whatever
            # was found bad before: the same sample on a resume)
            order = torch.randperm(len(self.clips), generator=g).tolist()
            clip = next((self.clips[i] for i in order if self.clips[i] not in self._bad), clip)
        if clip in self._bad:
            raise DataError(self._bad[clip])
        try:
            t_len = self._length(clip)
        except DataError as e:
            self._bad[clip] = str(e)
            raise
        lo, hi = self.delta
        if t_len < 2:
            raise DataError(f"{clip}: {t_len} frame(s), a pair needs 2")
        d = int(torch.randint(lo, min(hi, t_len - 1) + 1, (1,), generator=g)) if t_len - 1 >= lo else t_len - 1
        t = int(torch.randint(0, t_len - d, (1,), generator=g))
        return clip, t, d, torch.rand(4, generator=g)

    def _checked(self, epoch: int, index: int, decode: bool = True):
        """``choose`` with the clip checked and (``decode``) the pair decoded on the CPU.
        Returns ((clip, t, d), crop_rand, errors, pair or None): with ``on_error="skip"`` a
        bad sample is replaced by a deterministic other choice (never a clip known to be bad)
        and its error listed, up to ``MAX_FAILED_DRAWS`` consecutive failures that find no new
        bad clip (then, or once every clip has failed, a DataError)."""
        errors, stuck = [], 0  # stuck: consecutive failures that found no new bad clip
        for j in itertools.count(index, self.samples_per_epoch):
            known = len(self._bad)
            try:
                clip, t, d, crop = self.choose(epoch, j)
                self._check_clip(clip)
                pair = self._pair((clip, t, d)) if decode else None
                return (clip, t, d), crop, errors, pair
            except DataError as e:
                if self.on_error == "raise":
                    raise
                errors.append(str(e))
                stuck = 0 if len(self._bad) > known else stuck + 1  # a new bad clip: progress
                every = len(self._bad) >= len(self.clips)
                if stuck >= MAX_FAILED_DRAWS or every:
                    why = (f"all {len(self.clips)} clips failed" if every else
                           f"{stuck} consecutive draws failed ({len(self._bad)} of "
                           f"{len(self.clips)} clips unreadable so far)")
                    raise DataError(f"no readable sample for sample {index} of epoch {epoch}: {why}; "
                                    f"first error: {errors[0]} (check that the clips decode)") from e

    def sample(self, epoch: int, index: int):
        """Decoded: (frame_t, frame_next, crop_rand, (clip, t, d))."""
        clip, t, d, crop = self.choose(epoch, index)
        a, b = self._pair((clip, t, d))
        return a, b, crop, (clip, t, d)

    def _pair(self, spec):
        clip, t, d = spec
        if self.cache_clips == 0:  # no cache: decode the two frames only
            return tuple(self._resize(self._crop(clip, read_frames(clip, [t, t + d]))))
        frames = self._frames(clip)
        if t + d >= len(frames):
            raise DataError(f"{clip}: frame {t + d} asked, {len(frames)} decode (a truncated video?)")
        return frames[t], frames[t + d]

    def _map(self, fn: Callable, items) -> list:
        """``[fn(x) for x in items]``, on the ``workers`` decoding threads when there are several."""
        if self.workers <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"{type(self).__name__}-decode")
        return list(self._pool.map(fn, items))

    def decode(self, specs, pairs=None):
        """Frames of a batch of chosen samples: uint8 (B, 3, S, S) twice (CPU decoding);
        ``pairs``: the frames, when ``_checked`` decoded them already."""
        if pairs is None or any(p is None for p in pairs):
            pairs = self._map(self._pair, specs)
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    def masks(self, epoch: int, global_batch: int) -> torch.Tensor:
        """Swap masks of this rank's slice of a global batch: bool (B, N)."""
        g = _sample_generator(self.seed, epoch, -1 - global_batch)
        m = generate_swap_mask(self.mask_type, self.batch_size * self.world, self.size // self.p,
                               self.ratio, g)
        return m[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    # ---------------------------------------------------------------- batches
    _decode_when_checked = True  # the CPU loader decodes each sample while checking it

    def make_batch(self, epoch: int, position: int, cpu: bool = False):
        """This rank's batch number ``position`` of ``epoch`` (a pure function of both).
        ``cpu``: decode every sample on the CPU while checking it (DALI's fallback).

        Returns:
            (batch dict, its report: {"samples", "skipped", "errors"}).
        """
        return self._assemble(epoch, position, self._pick(epoch, position, cpu), cpu)

    def _pick(self, epoch: int, position: int, cpu: bool = False):
        """The checked samples of a batch: [(spec, crop_rand, errors, pair or None)]."""
        b0 = (position * self.world + self.rank) * self.batch_size
        dec = cpu or self._decode_when_checked
        return self._map(lambda i: self._checked(epoch, i, dec), range(b0, b0 + self.batch_size))

    def _assemble(self, epoch: int, position: int, picked, cpu: bool = False):
        b0 = (position * self.world + self.rank) * self.batch_size
        specs, crops, errors, pairs = zip(*picked)
        ft, fn = PairLoader.decode(self, list(specs), pairs) if cpu else self.decode(list(specs), pairs)
        batch = {"frame_t": ft, "frame_next": fn, "crop_rand": torch.stack(crops),
                 "index": torch.arange(b0, b0 + self.batch_size),
                 "swap_mask": self.masks(epoch, position)}
        if self.pin_memory:
            batch = {k: v.pin_memory() if v.device.type == "cpu" else v for k, v in batch.items()}
        errors = [e for errs in errors for e in errs]
        return batch, {"samples": len(specs), "skipped": len(errors), "errors": errors}

    def _batches(self, epoch: int, start: int):
        for position in range(start, len(self)):
            yield self.make_batch(epoch, position)

    def _close_producer(self):
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def __iter__(self):
        """The rest of the current epoch, from ``position``; then the next epoch is current.

        With ``prefetch`` a thread makes the batches ahead (one such thread per loader: a new
        iterator stops the previous one's); ``position`` and ``report`` advance as batches
        are handed out here, so a ``state_dict`` taken between batches resumes exactly.
        """
        self._close_producer()
        if self.position >= len(self):  # a state saved after the last batch of an epoch
            self.epoch, self.position = self.epoch + 1, 0
            return
        batches = self._batches(self.epoch, self.position)
        if self.prefetch:
            batches = self._producer = _Producer(batches, self.prefetch, f"{type(self).__name__}-prefetch")
        try:
            for batch, report in batches:
                self.position += 1
                self.report["samples"] += report["samples"]
                self.report["skipped"] += report["skipped"]
                self.report["errors"] += report["errors"][:max(0, KEEP_ERRORS - len(self.report["errors"]))]
                for e in report["errors"]:
                    self.data_report.add("skipped sample", e)
                yield batch
        finally:
            if isinstance(batches, _Producer):
                batches.close()
        self.epoch, self.position = self.epoch + 1, 0
