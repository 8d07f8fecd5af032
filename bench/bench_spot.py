"""Spotting throughput: frames/s of the spotter's score (one pair per frame) for the model
and the MDMD-style optical-flow baseline, on ready face crops (the scorer alone) and end
to end on a synthetic long video (decoding, face boxes, crops, scores).

    python bench/bench_spot.py            # CPU: micronbert_tiny, a few micronbert_s8 pairs
    python bench/bench_spot.py --quick    # fewer repeats
On a GPU it adds micronbert_s8 at 224 px with bf16 autocast and the fused kernels
(backend auto), batches 64 and 256. Writes bench/results/<device>/bench_spot.{csv,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import time_ms, write_table  # noqa: E402
from micronbert import create_model  # noqa: E402
from micronbert.spot import FlowScorer, ModelScorer, score_video  # noqa: E402


def scorer_rows(device, quick):
    rows = []
    cases = [("micronbert_tiny", 64, [64])]
    if device == "cuda":
        cases.append(("micronbert_s8", 224, [64, 256]))
    else:
        cases.append(("micronbert_s8", 224, [4]))
    for name, size, batches in cases:
        model = create_model(name, backend="auto").to(device)
        sc = ModelScorer(model, device)
        for b in batches:
            a = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            c = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            ms = time_ms(lambda: sc(a, c), device, warmup=1, reps=2 if quick or device == "cpu" else 5)
            rows.append({"what": "scorer", "method": name, "px": size, "batch": b,
                         "precision": "bf16+fused" if device == "cuda" else "fp32",
                         "frames_per_s": b / ms * 1e3})
            print(rows[-1], flush=True)
    fl = FlowScorer(112)
    b = 32
    a = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8)
    c = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8)
    ms = time_ms(lambda: fl(a, c), "cpu", warmup=1, reps=2 if quick else 3)
    rows.append({"what": "scorer", "method": "mdmd_flow (OpenCV Farneback, CPU)", "px": 112, "batch": b,
                 "precision": "fp32", "frames_per_s": b / ms * 1e3})
    print(rows[-1], flush=True)
    return rows


def end_to_end_rows(device, quick):
    from micronbert.data.synthetic_long import write_synthetic_long
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_long(tmp, n_subjects=1, videos_per_subject=1, seconds=5 if quick else 10, fps=30,
                             size=128, nuisance="medium", video=True, progress=False)
        path = os.path.join(tmp, "SAMM_longvideos", "001_1.mp4")
        model = create_model("micronbert_tiny", backend="auto").to(device)
        for name, sc in (("micronbert_tiny", ModelScorer(model, device)), ("mdmd_flow", FlowScorer(112))):
            t = time.perf_counter()
            res = score_video(path, {name: sc}, k=5, window=30, batch=64, progress=False)
            sec = time.perf_counter() - t
            rows.append({"what": "end to end (128 px H.264, decode+face+crop+score)", "method": name,
                         "px": sc.size[0], "batch": 64, "precision": "bf16+fused" if device == "cuda" and
                         name != "mdmd_flow" else "fp32", "frames_per_s": res["n_frames"] / sec})
            print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, a shorter video")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = scorer_rows(device, args.quick) + end_to_end_rows(device, args.quick)
    write_table("bench_spot", rows, device)


if __name__ == "__main__":
    main()
