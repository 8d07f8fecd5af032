"""Spotting micro- and macro-expressions in long videos, and the MEGC evaluation.

Per frame t, a motion score from a pair (frame t - k, frame t) of face crops:

- ``ModelScorer``: μ-BERT's DMA micro-motion map ``1 - D / max(D)`` (docs/method.md §3) of the
  pair, weighted by the PoI scores S of frame t: ``sum_i S_i (1 - D_i / max D)``;
- ``FlowScorer``: an MDMD-style optical-flow score (MEGC 2020's baseline method): Farneback
  flow of the pair with the head's motion removed (global shift by phase correlation, then
  the median flow), per block of a 6x6 grid the mean
  magnitude of the vectors in the block's main direction (8 bins), the mean of the top
  third of the blocks.

Both go through the same post-processing (``intervals_from_scores``): a symmetric score
``f(t) = (d(t) + d(t + k)) / 2`` (frame t against t - k and t + k, as MDMD compares the
current frame with a head and a tail frame), a moving average, a slow baseline removed
(running median), MEGC's per-video adaptive threshold ``mean + p (max - mean)``, runs
above it merged across gaps up to 0.5 s, the peak of each run as apex; intervals shorter
than 0.2 s dropped (the MEGC baseline's lower bound), micro = at most 0.5 s, macro longer.

Videos are streamed in chunks (``window`` frames): one face box per chunk (OpenCV Haar,
``faces.clip_face_box``), so the crop follows the face; both frames of a pair are cut with
the box of the later frame, so a box change between chunks is never read as motion.

MEGC scoring (``megc_counts``): a proposal is a true positive when its IoU with a
ground-truth interval of its class is >= 0.5, each ground truth matched at most once;
precision, recall and F1 for micro, macro and overall (counts summed) over the set.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from .data.io import VIDEO_EXTS, DataError, count_frames, list_frames, read_image, resize_u8
from .names import unique_names, write_names

KINDS = ("micro", "macro")


# ------------------------------------------------------------------ parameters
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


# ------------------------------------------------------------------ frames and faces
def iter_frames(path: str):
    """uint8 (H, W, 3) frames of a video file (PyAV, decoded as it goes) or a frame folder."""
    if os.path.isdir(path):
        for f in list_frames(path):
            yield read_image(f)
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
    from .data.pairs import dali_device
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

    from .data.pairs import dali_to_torch
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


def frame_source(path: str, source: str = "pyav", sequence_length: int = 64):
    """The frames of ``path`` for ``score_video``: None (its default, ``iter_frames``) for
    "pyav", ``iter_frames_dali`` for "dali"."""
    if source == "pyav":
        return None
    if source == "dali":
        return iter_frames_dali(path, sequence_length)
    raise ValueError(f"source must be 'pyav' or 'dali', got {source!r}")


def _chunk_box(frames, prev, name):
    """One square face box for a chunk (T, H, W, 3); keeps ``prev`` when the new one moved
    by less than 5 % of its side (no jitter), or when no face is found (None at the start:
    the whole frame, squared)."""
    from .data.faces import clip_face_box
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


# ------------------------------------------------------------------ scorers
class ModelScorer:
    """PoI-weighted DMA micro-motion score of pairs; the model's backend was chosen when it
    was built. CUDA: bf16 autocast (the fused kernels under ``backend="auto"``); CPU: fp32."""
    name = "micronbert"

    def __init__(self, model, device: Optional[str] = None, bf16: bool = True):
        self.model = model.eval()
        self.device = device or next(model.parameters()).device.type
        self.model.to(self.device)
        self.size = tuple(model.config.img_size)
        self.bf16 = bf16 and self.device == "cuda"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        """uint8 (B, 3, S, S) earlier and later crops -> scores (B,), patch maps (B, N)."""
        m = self.model
        a, b = a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            ct, tok = m.encode(torch.cat([a, b]))
            n = len(a)
            _, diag, s = m.dma(tok[:n], tok[n:], ct[n:])
            if s is None:  # a config without PoI masking: the PoI scores all the same
                s = m.poi_scores(ct[n:], tok[n:])
        maps = m.motion_profile(diag)
        return (s.float() * maps).sum(1).cpu().numpy(), maps.cpu()


class FlowScorer:
    """MDMD-style optical-flow score (module doc), on grey crops of ``size`` px."""
    name = "mdmd_flow"

    def __init__(self, size: int = 112, grid: int = 6, bins: int = 8):
        self.size, self.grid, self.bins = (size, size), grid, bins

    def one(self, a: np.ndarray, b: np.ndarray) -> float:
        import cv2

        from .baselines import farneback
        ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        # head motion: the global shift (phase correlation) undone before the flow, then
        # the median of what is left; in flat regions the flow is 0 either way
        win = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F)
        (sx, sy), _ = cv2.phaseCorrelate(ga.astype(np.float32), gb.astype(np.float32), win)
        gb = cv2.warpAffine(gb, np.float32([[1, 0, -sx], [0, 1, -sy]]), gb.shape[::-1],
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        flow = farneback(ga, gb)
        flow -= np.median(flow.reshape(-1, 2), axis=0)
        m = max(1, flow.shape[0] // 12)  # the crop's edge: new content when the head moves
        flow = flow[m:-m, m:-m]
        mag = np.hypot(flow[..., 0], flow[..., 1])
        ang = (np.arctan2(flow[..., 1], flow[..., 0]) + 2 * np.pi) % (2 * np.pi)
        bins = np.minimum((ang / (2 * np.pi / self.bins)).astype(int), self.bins - 1)
        h, w = mag.shape
        md = []
        for i in range(self.grid):
            for j in range(self.grid):
                sl = (slice(i * h // self.grid, (i + 1) * h // self.grid),
                      slice(j * w // self.grid, (j + 1) * w // self.grid))
                bb, mm = bins[sl].ravel(), mag[sl].ravel()
                main = np.bincount(bb, minlength=self.bins).argmax()
                md.append(mm[bb == main].mean())
        md = np.sort(np.array(md))[::-1]
        return float(md[: max(1, len(md) // 3)].mean())

    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        an = a.permute(0, 2, 3, 1).cpu().numpy()
        bn = b.permute(0, 2, 3, 1).cpu().numpy()
        return np.array([self.one(x, y) for x, y in zip(an, bn)]), None


# ------------------------------------------------------------------ streaming
def score_video(path: str, scorers: Dict[str, object], k: int, window: int = 64,
                batch: int = 64, face: bool = True, keep_maps: Optional[str] = None,
                progress: bool = True, n_frames: Optional[int] = None, max_kept: int = 9000,
                frames=None) -> dict:
    """Pair scores d(t) (frame t - k vs t; NaN for t < k) of every scorer, the video decoded
    once, in chunks of ``window`` frames with one face box each. ``keep_maps`` names a
    scorer whose later crops and patch maps are kept (for the MP4; the first ``max_kept``).
    ``frames``: where the frames come from, uint8 frames (H, W, 3) or sequences (F, H, W, 3),
    numpy or torch, on the CPU or the GPU (``iter_frames_dali``); default ``iter_frames(path)``."""
    from tqdm import tqdm
    if window < 1 or batch < 1:
        raise ValueError(f"window and batch must be >= 1 (got {window}, {batch})")
    total = n_frames if n_frames is not None else count_frames(path)
    if total <= k:
        raise DataError(f"{path}: {total} frames, not more than the pair distance k={k}")
    scores = {n: np.full(total, np.nan) for n in scorers}
    kept = {"crops": [], "maps": [], "n": 0}
    boxes, faces_found, tail, t0 = [], 0, None, 0
    box = None
    bar = tqdm(total=total, unit="frame", desc=os.path.basename(path.rstrip("/")),
               disable=not progress, leave=False)
    start = time.time()

    def flush(chunk):
        nonlocal box, tail, t0, faces_found
        arr = torch.cat(chunk)
        box, found = _chunk_box(arr, box, path)
        faces_found += found
        boxes.append([t0, t0 + len(arr)] + list(map(int, box)))
        x0, y0, x1, y1 = box
        prev = 0 if tail is None else len(tail)
        allf = arr if tail is None else torch.cat([tail, arr])
        raw = allf[:, y0:y1, x0:x1].permute(0, 3, 1, 2).contiguous()
        first = max(prev, k)  # chunk-local index of the first frame with a partner
        for name, sc in scorers.items():
            crops = resize_u8(raw, sc.size)
            for s in range(first, len(allf), batch):
                e = min(s + batch, len(allf))
                val, maps = sc(crops[s - k:e - k], crops[s:e])
                scores[name][t0 - prev + s:t0 - prev + e] = val
                if keep_maps == name and maps is not None and kept["n"] < max_kept:
                    kept["crops"].append(crops[s:e].to("cpu", copy=True))
                    kept["maps"].append(maps.float())
                    kept["n"] += e - s
        tail = allf[-k:]
        t0 += len(arr)
        bar.update(len(arr))

    chunk, have = [], 0  # pieces of the next chunk, their frames
    for f in iter_frames(path) if frames is None else frames:
        if isinstance(f, np.ndarray):  # PyAV's and PIL's arrays (read-only ones copied)
            f = torch.from_numpy(f if f.flags.writeable else f.copy())
        f = f[None] if f.dim() == 3 else f
        while len(f) and t0 + have < total:
            take = f[:min(window - have, total - t0 - have)]
            chunk.append(take)
            have += len(take)
            f = f[len(take):]
            if have == window:
                flush(chunk)
                chunk, have = [], 0
        if t0 + have >= total:
            break
    if chunk:
        flush(chunk)
    bar.close()
    if t0 < total:
        raise DataError(f"{path}: {t0} frames decoded, {total} expected (truncated video?)")
    out = {"scores": scores, "n_frames": total, "boxes": boxes,
           "face_found_chunks": faces_found, "chunks": len(boxes),
           "seconds": time.time() - start}
    if keep_maps:
        out["crops"] = torch.cat(kept["crops"]) if kept["crops"] else None
        out["maps"] = torch.cat(kept["maps"]) if kept["maps"] else None
    return out


# ------------------------------------------------------------------ curve -> intervals
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


# ------------------------------------------------------------------ MEGC scoring
def iou(a, b) -> float:
    """IoU of two inclusive frame intervals (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def match(pred: List[tuple], gt: List[tuple], thr: float = 0.5) -> int:
    """True positives: pairs with IoU >= thr, greedily by IoU, each proposal and each
    ground truth used at most once."""
    pairs = sorted(((iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)),
                   reverse=True)
    used_p, used_g, tp = set(), set(), 0
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            tp += 1
    return tp


def prf(tp, n_pred, n_gt) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gt if n_gt else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return dict(tp=int(tp), fp=int(n_pred - tp), fn=int(n_gt - tp), precision=p, recall=r, f1=f)


def megc_counts(pred: Dict[str, List[dict]], gt: Dict[str, List[dict]], thr: float = 0.5) -> dict:
    """MEGC spotting scores over a set: ``pred`` and ``gt`` map a video to its intervals
    (dicts with onset, offset, kind); matching within a video and a class; micro, macro and
    overall (counts summed over the classes) precision / recall / F1."""
    counts = {c: [0, 0, 0] for c in KINDS}
    for v in set(pred) | set(gt):
        for c in KINDS:
            pv = [(x["onset"], x["offset"]) for x in pred.get(v, []) if x["kind"] == c]
            gv = [(x["onset"], x["offset"]) for x in gt.get(v, []) if x["kind"] == c]
            counts[c][0] += match(pv, gv, thr)
            counts[c][1] += len(pv)
            counts[c][2] += len(gv)
    out = {c: prf(*counts[c]) for c in KINDS}
    out["overall"] = prf(*(sum(counts[c][i] for c in KINDS) for i in range(3)))
    return out


P_GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.96, 0.05))


def fit_p_loso(curves: Dict[str, np.ndarray], gt, subjects: Dict[str, str], params: SpotParams,
               grid=P_GRID):
    """Leave-one-subject-out choice of the threshold parameter p: for each subject, the p
    of ``grid`` with the best overall F1 on the other subjects' videos. Returns the
    predictions made with each held-out subject's p and the p per subject."""
    by_p = {p: {v: intervals_from_curve(c, params, p) for v, c in curves.items()} for p in grid}
    preds, chosen = {}, {}
    for s in sorted(set(subjects.values())):
        train = [v for v in curves if subjects[v] != s]
        if not train:  # one subject: no one to fit on, the default p
            best = params.p
        else:
            f1 = {p: megc_counts({v: by_p[p][v] for v in train},
                                 {v: gt.get(v, []) for v in train})["overall"]["f1"] for p in grid}
            best = max(grid, key=lambda p: (f1[p], -abs(p - params.p)))
        chosen[s] = best
        for v in curves:
            if subjects[v] == s:
                preds[v] = by_p[best][v] if best in by_p else intervals_from_curve(curves[v], params, best)
    return preds, chosen


# ------------------------------------------------------------------ writing
def write_intervals(out_dir: str, intervals: List[dict], fps: float, stem: str = "intervals"):
    """``stem``.csv and .json: onset, apex, offset (0-based frames), seconds, kind, score."""
    import csv
    os.makedirs(out_dir, exist_ok=True)
    rows = [dict(x, onset_s=round(x["onset"] / fps, 4), offset_s=round(x["offset"] / fps, 4),
                 duration_s=round((x["offset"] - x["onset"] + 1) / fps, 4)) for x in intervals]
    cols = ["onset", "apex", "offset", "onset_s", "offset_s", "duration_s", "kind", "score"]
    with open(os.path.join(out_dir, stem + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump({"fps": fps, "frames": "0-based, inclusive", "intervals": rows}, f, indent=2)


def plot_scores(path: str, curves: Dict[str, np.ndarray], found: Dict[str, List[dict]],
                thresholds: Dict[str, float], fps: float, gt: Optional[List[dict]] = None,
                title: str = ""):
    """One panel per method: the curve, its threshold, the found intervals (orange: micro,
    purple: macro) and the ground truth (a strip under the curve)."""
    from .viz import _plt
    plt = _plt()
    fig, axes = plt.subplots(len(curves), 1, figsize=(12, 2.6 * len(curves)), squeeze=False)
    colors = {"micro": "tab:orange", "macro": "tab:purple"}
    for ax, (name, c) in zip(axes[:, 0], curves.items()):
        t = np.arange(len(c)) / fps
        ax.plot(t, c, lw=0.8, color="k")
        ax.axhline(thresholds[name], color="tab:red", ls="--", lw=0.8, label="threshold")
        lo, hi = float(np.min(c)), float(np.max(c))
        for x in found.get(name, []):
            ax.axvspan(x["onset"] / fps, (x["offset"] + 1) / fps, color=colors[x["kind"]], alpha=0.3)
        for x in gt or []:
            ax.axvspan(x["onset"] / fps, (x["offset"] + 1) / fps, ymin=0, ymax=0.08,
                       color=colors[x["kind"]], alpha=0.9)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_ylabel(name)
        ax.set_xlim(0, len(c) / fps)
    axes[-1, 0].set_xlabel("seconds (shaded: found; strip at the bottom: ground truth; "
                           "orange micro, purple macro)")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(path: str, results: Dict[str, dict], title: str = ""):
    """F1 per class (micro, macro, overall), one bar per method."""
    from .viz import _plt
    plt = _plt()
    names = list(results)
    cls = ("micro", "macro", "overall")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    w = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        vals = [results[n][c]["f1"] for c in cls]
        bars = ax.bar(np.arange(3) + i * w, vals, w, label=n)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(3) + w * (len(names) - 1) / 2)
    ax.set_xticklabels(cls)
    ax.set_ylabel("F1 (MEGC, IoU >= 0.5)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_map_video(path: str, crops: torch.Tensor, maps: torch.Tensor, grid, fps: float):
    """MP4 of the later crop of each pair with the patch map (jet) laid over it."""
    import matplotlib.cm as cm
    import torch.nn.functional as F

    from .data.io import write_video
    gh, gw = grid
    m = F.interpolate(maps.view(-1, 1, gh, gw), size=tuple(crops.shape[-2:]), mode="bilinear",
                      align_corners=False)[:, 0].clamp(0, 1).numpy()
    over = (0.55 * crops.permute(0, 2, 3, 1).float().numpy()
            + 0.45 * 255 * cm.jet(m)[..., :3]).astype(np.uint8)
    h, w = over.shape[1:3]
    if h % 2 or w % 2:
        over = over[:, : h - h % 2, : w - w % 2]
    write_video(over, path, fps=int(round(fps)), crf=23)


# ------------------------------------------------------------------ commands
def _scorers(model, method: str, flow_size: int):
    out = {}
    if method in ("model", "both"):
        if model is None:
            raise ValueError("the model scorer needs a model (--checkpoint or --model)")
        out["micronbert"] = ModelScorer(model)
    if method in ("flow", "both"):
        out["mdmd_flow"] = FlowScorer(flow_size)
    return out


def spot_one(path: str, out: str, model=None, fps: float = 30.0, method: str = "both",
             params: Optional[SpotParams] = None, window: Optional[int] = None, batch: int = 64,
             flow_size: int = 112, mp4: bool = False, gt: Optional[List[dict]] = None,
             progress: bool = True, source: str = "pyav") -> dict:
    """Spot one video: OUT/intervals.{csv,json} (the model's; the baseline's as
    intervals_mdmd_flow.*), scores.csv, score.png, optionally spot_map.mp4.
    ``source``: "pyav" (``iter_frames``, CPU) or "dali" (``iter_frames_dali``: on the GPU
    where CUDA is, the frames staying there; else DALI's CPU decoders)."""
    params = params or SpotParams(fps)
    scorers = _scorers(model, method, flow_size)
    window = window or max(params.k + 1, min(256, int(round(fps))))
    res = score_video(path, scorers, params.k, window, batch, keep_maps="micronbert" if mp4 and
                      "micronbert" in scorers else None, progress=progress,
                      frames=frame_source(path, source, window))
    os.makedirs(out, exist_ok=True)
    curves = {n: spot_curve(d, params) for n, d in res["scores"].items()}
    found = {n: intervals_from_curve(c, params) for n, c in curves.items()}
    for n, iv in found.items():
        write_intervals(out, iv, fps, "intervals" if n == list(found)[0] else f"intervals_{n}")
    with open(os.path.join(out, "scores.csv"), "w") as f:
        f.write("frame," + ",".join(f"{n}_pair,{n}_curve" for n in curves) + "\n")
        for t in range(res["n_frames"]):
            f.write(f"{t}," + ",".join(f"{res['scores'][n][t]:.6g},{curves[n][t]:.6g}"
                                       for n in curves) + "\n")
    plot_scores(os.path.join(out, "score.png"), curves, found,
                {n: threshold_of(c, params.p) for n, c in curves.items()}, fps, gt,
                title=os.path.basename(path.rstrip("/")))
    if mp4 and res.get("maps") is not None:
        write_map_video(os.path.join(out, "spot_map.mp4"), res["crops"], res["maps"],
                        model.config.grid, fps)
    fps_rate = res["n_frames"] / max(res["seconds"], 1e-9)
    summary = {"video": path, "frames": res["n_frames"], "fps": fps, "params": asdict(params),
               "methods": list(scorers), "intervals": found, "face_found_chunks": res["face_found_chunks"],
               "chunks": res["chunks"], "frames_per_s": fps_rate}
    if gt is not None:
        summary["megc"] = {n: megc_counts({"v": iv}, {"v": gt}) for n, iv in found.items()}
    with open(os.path.join(out, "spot.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def spot_dataset(dataset: str, root: str, out: str, model=None, method: str = "both",
                 on_error: str = "raise", params_kw: Optional[dict] = None, batch: int = 64,
                 flow_size: int = 112, progress: bool = True, max_plots: int = 20,
                 source: str = "pyav") -> dict:
    """Spot every video of a long-video set and score it by the MEGC protocol, each method
    with the default p and with p fitted leave-one-subject-out. Writes per video
    OUT/videos/<video>/intervals*.{csv,json} and score.png, and OUT/spot_results.json,
    OUT/spot_f1.png (F1 per class and method)."""
    from .data.annotations import load_long_annotations
    table = load_long_annotations(dataset, root, on_error)
    videos = table.attrs["videos"]
    if not videos:
        raise DataError(f"{root}: no videos to spot ({dataset})")
    gt = {}
    for r in table.itertuples():
        gt.setdefault(r.video, []).append(dict(onset=r.onset, apex=r.apex, offset=r.offset, kind=r.kind))
    scorers = _scorers(model, method, flow_size)
    curves = {n: {} for n in scorers}
    subjects, timing, faces, skipped = {}, {n: 0.0 for n in scorers}, [], list(table.attrs["skipped"])
    params_of = {}
    t_start = time.time()
    n_frames = 0
    for i, v in enumerate(videos):
        params = SpotParams(v["fps"], **(params_kw or {}))
        window = max(params.k + 1, min(256, int(round(v["fps"]))))
        try:
            res = score_video(v["path"], scorers, params.k, window, batch, progress=progress,
                              n_frames=v["n_frames"], frames=frame_source(v["path"], source, window))
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append(str(e))
            continue
        n_frames += res["n_frames"]
        params_of[v["video"]] = params
        subjects[v["video"]] = v["subject"]
        faces.append(res["face_found_chunks"] / max(1, res["chunks"]))
        for n in scorers:
            curves[n][v["video"]] = spot_curve(res["scores"][n], params)
        if progress:
            print(f"[spot] {i + 1}/{len(videos)} {v['video']}: {res['n_frames']} frames, "
                  f"{res['n_frames'] / max(res['seconds'], 1e-9):.1f} frames/s", flush=True)
    results, fixed, loso = {}, {}, {}
    for n in scorers:
        pv = {v: intervals_from_curve(c, params_of[v]) for v, c in curves[n].items()}
        fixed[n] = megc_counts(pv, {v: gt.get(v, []) for v in curves[n]})
        lp, chosen = fit_p_loso(curves[n], gt, subjects, next(iter(params_of.values())))
        loso[n] = dict(megc_counts(lp, {v: gt.get(v, []) for v in curves[n]}), p_per_subject=chosen)
        results[n] = pv
    vnames = unique_names(params_of)  # videos/<name>/: safe, one folder per video
    write_names(os.path.join(out, "videos", "names.json"), vnames, "videos/<name>/ folder -> video")
    for j, v in enumerate(sorted(params_of)):
        d = os.path.join(out, "videos", vnames[v])
        for n in scorers:
            write_intervals(d, results[n][v], params_of[v].fps,
                            "intervals" if n == list(scorers)[0] else f"intervals_{n}")
        if j < max_plots:
            plot_scores(os.path.join(d, "score.png"), {n: curves[n][v] for n in scorers},
                        {n: results[n][v] for n in scorers},
                        {n: threshold_of(curves[n][v], params_of[v].p) for n in scorers},
                        params_of[v].fps, gt.get(v, []), title=v)
    n_gt = {c: sum(x["kind"] == c for g in gt.values() for x in g) for c in KINDS}
    summary = {"dataset": dataset, "root": root, "videos": len(params_of), "frames": n_frames,
               "ground_truth": n_gt, "params": asdict(next(iter(params_of.values()))),
               "protocol": "MEGC: TP when IoU >= 0.5 with a ground truth of the same class, "
                           "each matched once; counts summed over the set",
               "default_p": fixed, "loso_p": loso,
               "face_found_fraction": float(np.mean(faces)) if faces else 0.0,
               "skipped": skipped, "data_report": table.attrs["report"].as_dict() if "report" in table.attrs else None,
               "fixes": [f"{r.video} {r.onset}: {r.fixes}"
                                             for r in table.itertuples() if r.fixes],
               "seconds": round(time.time() - t_start, 1)}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "spot_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_bars(os.path.join(out, "spot_f1.png"), {n: loso[n] for n in scorers},
              title=f"{dataset}: {len(params_of)} videos, p fitted leave-one-subject-out")
    return summary


def format_table(summary: dict) -> str:
    """A Markdown table of F1 (and TP/FP/FN) per method, class and p choice."""
    lines = ["| method | p | micro F1 (TP/FP/FN) | macro F1 (TP/FP/FN) | overall F1 |",
             "|---|---|---|---|---|"]
    for key, label in (("default_p", "default"), ("loso_p", "LOSO")):
        for n, r in summary[key].items():
            cell = [f"{r[c]['f1']:.3f} ({r[c]['tp']}/{r[c]['fp']}/{r[c]['fn']})" for c in KINDS]
            lines.append(f"| {n} | {label} | {cell[0]} | {cell[1]} | {r['overall']['f1']:.3f} |")
    return "\n".join(lines)
