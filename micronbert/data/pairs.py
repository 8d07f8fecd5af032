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
import torch.nn.functional as F

from ..kernels import generate_swap_mask
from .io import IMAGE_EXTS, VIDEO_EXTS, DataError, read_frames


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
                 on_error: str = "raise", cache_clips: int = 64):
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
        self._cache_n = cache_clips

    # ---------------------------------------------------------------- state
    def __len__(self):  # batches per epoch, per rank
        return self.samples_per_epoch // (self.batch_size * self.world)

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, s):
        self.epoch, self.position = int(s["epoch"]), int(s["position"])

    # ---------------------------------------------------------------- samples
    def _frames(self, path):
        if path not in self._cache:
            self._cache[path] = read_frames(path)
            if len(self._cache) > self._cache_n:
                self._cache.popitem(last=False)
        self._cache.move_to_end(path)
        return self._cache[path]

    def _resize(self, f: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(f).permute(2, 0, 1)
        if x.shape[1:] != (self.size, self.size):
            x = F.interpolate(x[None].float(), size=(self.size, self.size), mode="area")[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x

    def sample(self, epoch: int, index: int):
        """The sample at global ``index`` of ``epoch``: (frame_t, frame_next, mask, crop_rand)."""
        g = _sample_generator(self.seed, epoch, index)
        clip = self.clips[int(torch.randint(len(self.clips), (1,), generator=g))]
        frames = self._frames(clip)
        t_len = len(frames)
        lo, hi = self.delta
        if t_len < 2:
            raise DataError(f"{clip}: {t_len} frame(s), a pair needs 2")
        d = int(torch.randint(lo, min(hi, t_len - 1) + 1, (1,), generator=g)) if t_len - 1 >= lo else t_len - 1
        t = int(torch.randint(0, t_len - d, (1,), generator=g))
        crop = torch.rand(4, generator=g)
        return self._resize(frames[t]), self._resize(frames[t + d]), crop, (clip, t, d)

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
            out = {"frame_t": [], "frame_next": [], "crop_rand": [], "index": []}
            for i in range(b0, b0 + self.batch_size):
                j = i
                while True:
                    try:
                        ft, fn, c, _ = self.sample(self.epoch, j)
                        break
                    except DataError as e:
                        if self.on_error == "raise":
                            raise
                        self.report["skipped"] += 1
                        self.report["errors"].append(str(e))
                        j += self.samples_per_epoch  # a deterministic replacement
                for k, v in zip(("frame_t", "frame_next", "crop_rand", "index"),
                                (ft, fn, c, torch.tensor(i))):
                    out[k].append(v)
                self.report["samples"] += 1
            batch = {k: torch.stack(v) for k, v in out.items()}
            batch["swap_mask"] = self.masks(self.epoch, self.position)
            self.position += 1
            yield batch
