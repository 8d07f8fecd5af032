"""Spotting a video or a long-video set: the video streamed once through every scorer,
the curves turned into intervals, scored by MEGC, written (CSV, JSON, PNG, MP4)."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import Dict, List, Optional

import numpy as np
import torch

from ..data.io import DataError, count_frames, resize_u8
from ..names import unique_names, write_names
from .frames import chunk_box, chunks, frame_source, iter_frames
from .intervals import KINDS, SpotParams, intervals_from_curve, spot_curve, threshold_of
from .megc import fit_p_loso, megc_counts
from .scorers import FlowScorer, ModelScorer
from ..viz import save_bars, save_score_curves


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

    from ..console import bar_on
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
               disable=not bar_on(progress), leave=False)
    start = time.time()

    encoded = {}  # scorer -> encoder outputs of the tail's frames, while the box stays

    def flush(arr):
        nonlocal box, tail, t0, faces_found
        last_box = box
        box, found = chunk_box(arr, box, path)
        faces_found += found
        boxes.append([t0, t0 + len(arr)] + list(map(int, box)))
        x0, y0, x1, y1 = box
        prev = 0 if tail is None else len(tail)
        allf = arr if tail is None else torch.cat([tail, arr])
        raw = allf[:, y0:y1, x0:x1].permute(0, 3, 1, 2).contiguous()
        first = max(prev, k)  # chunk-local index of the first frame with a partner
        for name, sc in scorers.items():
            crops = resize_u8(raw, sc.size)
            pair = lambda s, e: sc(crops[s - k:e - k], crops[s:e])  # noqa: E731
            if hasattr(sc, "encode"):  # each frame encoded once; the tail again only if the box moved
                kept_x = encoded.get(name) if last_box is not None and list(last_box) == list(box) else None
                x = encode_chunk(sc, crops, kept_x, batch)
                encoded[name] = x[-k:]
                pair = lambda s, e: sc.pairs(x[s - k:e - k], x[s:e])  # noqa: E731
            for s in range(first, len(allf), batch):
                e = min(s + batch, len(allf))
                val, maps = pair(s, e)
                scores[name][t0 - prev + s:t0 - prev + e] = val
                if keep_maps == name and maps is not None and kept["n"] < max_kept:
                    kept["crops"].append(crops[s:e].to("cpu", copy=True))
                    kept["maps"].append(maps.float())
                    kept["n"] += e - s
        tail = allf[-k:]
        t0 += len(arr)
        bar.update(len(arr))

    for arr in chunks(_checked_frames(path, iter_frames(path) if frames is None else frames, window,
                                      scorers), window, total):
        flush(arr)
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


def _checked_frames(path: str, frames, window: int, scorers):
    """``frames``, after their first one's size was checked against the memory spotting it
    takes (``memory.spot_bytes``): a video too large is a DataError naming it."""
    import itertools
    import math

    from ..memory import check_bytes, spot_bytes
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return iter(())
    h, w = first.shape[-3:-1]
    sides = [s if isinstance(s, int) else int(math.sqrt(s[0] * s[1]))
             for s in (getattr(sc, "size", 0) for sc in scorers.values())]
    try:
        check_bytes(spot_bytes(window, (h, w), sides), f"{w}x{h} frames in {window}-frame chunks",
                    "downscale the video, lower its --fps or --flow-size")
    except MemoryError as e:
        raise DataError(f"{path}: {e}") from e
    return itertools.chain([first], frames)


def encode_chunk(scorer, crops: torch.Tensor, kept: Optional[torch.Tensor], batch: int) -> torch.Tensor:
    """Encoder outputs of a chunk's crops (the carried tail first): the tail's ``kept``
    outputs reused where given (same face box), the other frames encoded once."""
    if kept is None or len(kept) > len(crops):
        return scorer.encode(crops, batch)
    return torch.cat([kept, scorer.encode(crops[len(kept):], batch)])


# the classes of spot_f1.png
SPOT_CLASSES = KINDS + ("overall",)


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


def write_map_video(path: str, crops: torch.Tensor, maps: torch.Tensor, grid, fps: float):
    """MP4 of the later crop of each pair with the patch map (jet) laid over it."""
    import matplotlib.cm as cm
    import torch.nn.functional as F

    from ..data.io import write_video
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
def _precision_of(scorers) -> Optional[str]:
    """The model scorer's precision (fp32 | bf16), None without it (the flow baseline: fp32)."""
    sc = scorers.get("micronbert")
    return None if sc is None else sc.precision


def _scorers(model, method: str, flow_size: int, precision: str = "auto"):
    out = {}
    if method in ("model", "both"):
        if model is None:
            raise ValueError("the model scorer needs a model (--checkpoint or --model)")
        out["micronbert"] = ModelScorer(model, precision=precision)
        print(f"[spot] precision {out['micronbert'].precision} ({out['micronbert'].device})", file=sys.stderr)
    if method in ("flow", "both"):
        out["mdmd_flow"] = FlowScorer(flow_size)
    return out


def spot_one(path: str, out: str, model=None, fps: float = 30.0, method: str = "both",
             params: Optional[SpotParams] = None, window: Optional[int] = None, batch: int = 64,
             flow_size: int = 112, mp4: bool = False, gt: Optional[List[dict]] = None,
             progress: bool = True, source: str = "pyav", precision: str = "auto") -> dict:
    """Spot one video: OUT/intervals.{csv,json} (the model's; the baseline's as
    intervals_mdmd_flow.*), scores.csv, score.png, optionally spot_map.mp4.
    ``source``: "pyav" (``iter_frames``, CPU) or "dali" (``iter_frames_dali``: on the GPU
    where CUDA is, the frames staying there; else DALI's CPU decoders). ``precision``: the
    model's (auto | fp32 | bf16, kernels.backend.resolve_precision)."""
    params = params or SpotParams(fps)
    scorers = _scorers(model, method, flow_size, precision)
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
    save_score_curves(os.path.join(out, "score.png"), curves, found,
                      {n: threshold_of(c, params.p) for n, c in curves.items()}, fps, gt,
                      title=os.path.basename(path.rstrip("/")))
    if mp4 and res.get("maps") is not None:
        write_map_video(os.path.join(out, "spot_map.mp4"), res["crops"], res["maps"],
                        model.config.grid, fps)
    fps_rate = res["n_frames"] / max(res["seconds"], 1e-9)
    summary = {"video": path, "frames": res["n_frames"], "fps": fps, "params": asdict(params),
               "methods": list(scorers), "intervals": found, "face_found_chunks": res["face_found_chunks"],
               "chunks": res["chunks"], "frames_per_s": fps_rate, "precision": _precision_of(scorers),
               "warnings": [] if res["face_found_chunks"] else [no_face_warning(path)]}
    for w in summary["warnings"]:
        print(f"[spot] warning: {w}", file=sys.stderr)
    if gt is not None:
        summary["megc"] = {n: megc_counts({"v": iv}, {"v": gt}) for n, iv in found.items()}
    with open(os.path.join(out, "spot.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _score_videos(videos, scorers, params_kw, batch, source, on_error, skipped, progress):
    """Every video's curve per scorer: (curves {scorer: {video: curve}}, subjects, params
    {video: SpotParams}, face-found fractions, frames); an unreadable video is raised or,
    ``on_error="skip"``, added to ``skipped``."""
    curves = {n: {} for n in scorers}
    subjects, faces, params_of, n_frames = {}, [], {}, 0
    for i, v in enumerate(videos):
        params = SpotParams(v["fps"], **(params_kw or {}))
        window = max(params.k + 1, min(256, int(round(v["fps"]))))
        try:
            res = score_video(v["path"], scorers, params.k, window, batch, progress=progress,
                              n_frames=v["n_frames"], frames=frame_source(v["path"], source, window))
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append(f"video {v['video']}: {e}")
            print(f"[spot] skipped video {v['video']} ({i + 1}/{len(videos)}): {e}", file=sys.stderr)
            continue
        n_frames += res["n_frames"]
        params_of[v["video"]] = params
        subjects[v["video"]] = v["subject"]
        faces.append((v["video"], res["face_found_chunks"] / max(1, res["chunks"])))
        for n in scorers:
            curves[n][v["video"]] = spot_curve(res["scores"][n], params)
        if progress:
            print(f"[spot] {i + 1}/{len(videos)} {v['video']}: {res['n_frames']} frames, "
                  f"{res['n_frames'] / max(res['seconds'], 1e-9):.1f} frames/s", flush=True)
    return curves, subjects, params_of, faces, n_frames


def _write_videos(out, scorers, curves, results, params_of, gt, max_plots):
    """OUT/videos/<name>/intervals*.{csv,json} and, for the first ``max_plots``, score.png;
    <name> is the video's id made safe and unique (OUT/videos/names.json maps it back)."""
    vnames = unique_names(params_of)
    write_names(os.path.join(out, "videos", "names.json"), vnames, "videos/<name>/ folder -> video")
    for j, v in enumerate(sorted(params_of)):
        d = os.path.join(out, "videos", vnames[v])
        for n in scorers:
            write_intervals(d, results[n][v], params_of[v].fps,
                            "intervals" if n == list(scorers)[0] else f"intervals_{n}")
        if j < max_plots:
            save_score_curves(os.path.join(d, "score.png"), {n: curves[n][v] for n in scorers},
                              {n: results[n][v] for n in scorers},
                              {n: threshold_of(curves[n][v], params_of[v].p) for n in scorers},
                              params_of[v].fps, gt.get(v, []), title=v)


def spot_dataset(dataset: str, root: str, out: str, model=None, method: str = "both",
                 on_error: str = "raise", params_kw: Optional[dict] = None, batch: int = 64,
                 flow_size: int = 112, progress: bool = True, max_plots: int = 20,
                 source: str = "pyav", precision: str = "auto") -> dict:
    """Spot every video of a long-video set and score it by the MEGC protocol, each method
    with the default p and with p fitted leave-one-subject-out. Writes per video
    OUT/videos/<video>/intervals*.{csv,json} and score.png, and OUT/spot_results.json,
    OUT/spot_f1.png (F1 per class and method). ``precision``: the model's (as ``spot_one``)."""
    from ..data.long_videos import load_long_annotations
    table = load_long_annotations(dataset, root, on_error)
    videos = table.attrs["videos"]
    if not videos:
        raise DataError(f"{root}: no videos to spot ({dataset})")
    gt = {}
    for r in table.itertuples():
        gt.setdefault(r.video, []).append(dict(onset=r.onset, apex=r.apex, offset=r.offset, kind=r.kind))
    scorers = _scorers(model, method, flow_size, precision)
    skipped = list(table.attrs["skipped"])
    t_start = time.time()
    curves, subjects, params_of, faces, n_frames = _score_videos(videos, scorers, params_kw, batch, source,
                                                                 on_error, skipped, progress)
    unread = sorted({v["video"] for v in videos} - set(params_of))
    if not params_of:
        raise DataError(f"{root}: none of the {len(videos)} videos could be read, nothing to spot "
                        f"(first: {skipped[-len(unread)] if unread else '?'})")
    report = table.attrs.get("report")
    for s in skipped[len(skipped) - len(unread):]:
        if report is not None:
            report.add("skipped video", s)
    gt = {v: g for v, g in gt.items() if v in params_of}  # a skipped video's intervals are not scored
    results, fixed, loso = {}, {}, {}
    for n in scorers:
        pv = {v: intervals_from_curve(c, params_of[v]) for v, c in curves[n].items()}
        fixed[n] = megc_counts(pv, {v: gt.get(v, []) for v in curves[n]})
        lp, chosen = fit_p_loso(curves[n], gt, subjects, next(iter(params_of.values())))
        loso[n] = dict(megc_counts(lp, {v: gt.get(v, []) for v in curves[n]}), p_per_subject=chosen)
        results[n] = pv
    _write_videos(out, scorers, curves, results, params_of, gt, max_plots)
    n_gt = {c: sum(x["kind"] == c for g in gt.values() for x in g) for c in KINDS}
    summary = {"dataset": dataset, "root": root, "videos": len(params_of), "frames": n_frames,
               "ground_truth": n_gt, "params": asdict(next(iter(params_of.values()))),
               "protocol": "MEGC: TP when IoU >= 0.5 with a ground truth of the same class, "
                           "each matched once; counts summed over the set",
               "default_p": fixed, "loso_p": loso,
               "face_found_fraction": float(np.mean([f for _, f in faces])) if faces else 0.0,
               "skipped": skipped, "videos_skipped": unread,
               "warnings": _warnings(unread, len(videos), [v for v, f in faces if f == 0]),
               "data_report": table.attrs["report"].as_dict() if "report" in table.attrs else None,
               "fixes": [f"{r.video} {r.onset}: {r.fixes}"
                                             for r in table.itertuples() if r.fixes],
               "seconds": round(time.time() - t_start, 1), "precision": _precision_of(scorers)}
    summary = {"verdict": spot_verdict(loso), **summary}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "spot_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "spot_results.md"), "w") as f:
        f.write(spot_markdown(summary))
    for w in summary["warnings"]:
        print(f"[spot] warning: {w}", file=sys.stderr)
    save_bars(os.path.join(out, "spot_f1.png"), {n: {c: loso[n][c]["f1"] for c in SPOT_CLASSES} for n in scorers},
              keys=[(c, f"{c} F1") for c in SPOT_CLASSES], ylim=(0, 1.15),
              title=f"{dataset}: {len(params_of)} videos, p fitted leave-one-subject-out (MEGC F1, IoU >= 0.5)")
    return summary


# spotting's verdict metrics (MEGC F1 with p fitted leave-one-subject-out) and their chance
SPOT_LABELS = {"overall": "overall F1", "micro": "micro F1", "macro": "macro F1"}
SPOT_CHANCE = {k: 0.0 for k in SPOT_LABELS}  # a spotter that flags nothing; no trivial F1 above 0


def _spot_metrics(loso: dict) -> dict:
    return {n: {k: r[k]["f1"] for k in SPOT_LABELS} for n, r in loso.items()}


def spot_verdict(loso: dict) -> str:
    """The verdict of the model ("micronbert") against the other methods (LOSO p); a line
    saying so when the model did not run."""
    from ..verdict import verdict
    f1 = _spot_metrics(loso)
    if "micronbert" not in f1:
        return f"the model did not run (--method flow): only {', '.join(f1)} was scored."
    return verdict(f1.pop("micronbert"), f1, SPOT_CHANCE, SPOT_LABELS, subject="the model (micronbert)")


def spot_markdown(summary: dict) -> str:
    """spot_results.md: the verdict, chance, the best baseline, then ``format_table``."""
    from ..verdict import verdict_lines
    f1 = _spot_metrics(summary["loso_p"])
    head = [f"**Does it work?** {summary['verdict'][0].upper() + summary['verdict'][1:]}", ""]
    if "micronbert" in f1:
        head = verdict_lines(f1.pop("micronbert"), f1, SPOT_CHANCE, SPOT_LABELS,
                             chance_notes={"overall": "a spotter that flags nothing scores 0"},
                             subject="the model (micronbert)")
    return "\n".join([f"# Spotting {summary['dataset']}: {summary['videos']} videos, MEGC protocol", ""]
                     + head + [format_table(summary), "", summary["protocol"] + "."]) + "\n"


def no_face_warning(what: str) -> str:
    return (f"no face found in any chunk of {what}: the whole frame (squared) was scored, "
            f"so its intervals may be head or background motion")


def _warnings(unread: List[str], n_videos: int, faceless: List[str]) -> List[str]:
    """What a reader of spot_results.json must know: skipped videos, videos without a face."""
    out = []
    if unread:
        out.append(f"{len(unread)} of {n_videos} videos skipped (unreadable), left out of the "
                   f"predictions and the ground truth: {', '.join(unread[:5])}")
    if faceless:
        out.append(no_face_warning(f"{len(faceless)} video(s) ({', '.join(faceless[:5])})"))
    return out


def format_table(summary: dict) -> str:
    """A Markdown table of F1 (and TP/FP/FN) per method, class and p choice."""
    lines = ["| method | p | micro F1 (TP/FP/FN) | macro F1 (TP/FP/FN) | overall F1 |",
             "|---|---|---|---|---|"]
    for key, label in (("default_p", "default"), ("loso_p", "LOSO")):
        for n, r in summary[key].items():
            cell = [f"{r[c]['f1']:.3f} ({r[c]['tp']}/{r[c]['fp']}/{r[c]['fn']})" for c in KINDS]
            lines.append(f"| {n} | {label} | {cell[0]} | {cell[1]} | {r['overall']['f1']:.3f} |")
    return "\n".join(lines)
