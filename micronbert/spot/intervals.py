"""A video's pair scores -> its spotted intervals: the symmetric score, a moving average,
a slow baseline removed, MEGC's per-video threshold ``mean + p (max - mean)``, runs merged
and split into micro (<= 0.5 s) and macro."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

KINDS = ("micro", "macro")


@dataclass
class SpotParams:
    fps: float
    k: Optional[int] = None      # pair distance in frames; default round(0.15 s * fps)
    smooth_s: float = 0.1        # moving average of the score
    baseline_s: float = 5.0      # running median removed (slow drift)
    p: float = 0.3               # threshold = mean + p (max - mean), per video
    merge_s: float = 0.5         # runs closer than this are one interval
    min_s: float = 0.2           # shorter intervals are dropped
    micro_max_s: float = 0.5     # MEGC: micro-expressions last at most 0.5 s

    def __post_init__(self):
        if not self.fps or self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps!r}")
        if self.k is None:
            self.k = max(1, int(round(0.15 * self.fps)))
        if self.k < 1:
            raise ValueError(f"k must be >= 1 frame, got {self.k}")

    def frames(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.fps)))


def _moving_average(x, n):
    if n <= 1:
        return x
    pad = np.pad(x, (n // 2, n - 1 - n // 2), mode="edge")
    return np.convolve(pad, np.ones(n) / n, mode="valid")


def _running_median(x, n):
    from scipy.ndimage import median_filter
    return median_filter(x, size=n, mode="nearest") if n > 1 else np.zeros_like(x)


def spot_curve(d: np.ndarray, params: SpotParams) -> np.ndarray:
    """Pair scores d(t) (NaN where no pair) -> the curve that is thresholded: symmetric
    (frame t against t - k and t + k), smoothed, slow baseline removed."""
    d = np.asarray(d, dtype=np.float64).copy()
    valid = np.isfinite(d)
    if not valid.any():
        return np.zeros_like(d)
    d[~valid] = np.interp(np.flatnonzero(~valid), np.flatnonzero(valid), d[valid])
    k = params.k
    ahead = np.concatenate([d[k:], np.repeat(d[-1:], k)])
    f = 0.5 * (d + ahead)
    f = _moving_average(f, params.frames(params.smooth_s))
    n = min(params.frames(params.baseline_s), len(f))
    return f - _running_median(f, max(1, n if n % 2 else n - 1))


def intervals_from_curve(c: np.ndarray, params: SpotParams, p: Optional[float] = None) -> List[dict]:
    """Runs of the curve above ``mean + p (max - mean)``, merged across short gaps;
    apex = the peak; kind by duration. 0-based inclusive frame indices."""
    p = params.p if p is None else p
    c = np.asarray(c, dtype=np.float64)
    if len(c) == 0:
        return []
    thr = c.mean() + p * (c.max() - c.mean())
    above = c > thr
    runs, t = [], 0
    while t < len(c):
        if above[t]:
            s = t
            while t + 1 < len(c) and above[t + 1]:
                t += 1
            runs.append([s, t])
        t += 1
    merged = []
    for r in runs:
        if merged and r[0] - merged[-1][1] - 1 <= params.frames(params.merge_s) - 1:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    out = []
    for s, e in merged:
        if e - s + 1 < params.frames(params.min_s):
            continue
        apex = int(s + np.argmax(c[s:e + 1]))
        kind = "micro" if (e - s + 1) / params.fps <= params.micro_max_s else "macro"
        out.append(dict(onset=int(s), apex=apex, offset=int(e), kind=kind, score=float(c[apex])))
    return out


def threshold_of(c, p):
    c = np.asarray(c, dtype=np.float64)
    return float(c.mean() + p * (c.max() - c.mean())) if len(c) else 0.0
