"""Spotting throughput: frames/s of the spotter's score (one pair per frame) for the model
and the MDMD-style optical-flow baseline, on ready face crops (the scorer alone) and end
to end on a synthetic long video (decoding, face boxes, crops, scores).

    python bench/bench_spot.py            # CPU: micronbert_tiny, a few micronbert_s8 pairs
    python bench/bench_spot.py --quick    # fewer repeats
    python bench/bench_spot.py --tiny     # micronbert_tiny only, a 3 s video (a smoke test)
On a GPU it adds micronbert_s8 at 224 px with bf16 autocast and the fused kernels
(backend auto), batches 64 and 256. Model rows: model FLOPs per pair (counted on the
reference route), achieved TFLOP/s and frac_gemm, over the machine's own GEMM rate in the
same precision measured in the same run (common.machine_limits; on a GPU also mfu_spec,
over the spec sheet's bf16 peak, an assumption). Writes bench/results/<device>/bench_spot.{csv,md},
a row as each is measured.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import Table, fraction, gemm_shape, limit_notes, machine_limits, spec_fraction, time_ms  # noqa: E402
from micronbert import create_model, get_config  # noqa: E402
from micronbert.spot import FlowScorer, ModelScorer, score_video  # noqa: E402


def pair_flops(name, size, device) -> float:
    """Model FLOPs of scoring one pair (the scorer's call, reference route, torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    sc = ModelScorer(create_model(name, backend="reference").to(device), device)
    a = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    with FlopCounterMode(display=False) as fc:
        sc(a, a)
    return fc.get_total_flops()


def stream_flops(sc, x_prev, frame) -> float:
    """Model FLOPs of one new frame of the stream: its encoding and one DMA (torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        sc.pairs(x_prev, sc.encode(frame))
    return fc.get_total_flops()


def row(what, method, px, batch, precision, frames_per_s, flops=None, lim=None):
    """One table row; with ``flops`` per pair, the achieved TFLOP/s and fractions."""
    tf = None if flops is None else flops * frames_per_s / 1e12
    p = {"bf16+fused": "bf16"}.get(precision, precision)
    return {"what": what, "method": method, "px": px, "batch": batch, "precision": precision,
            "frames_per_s": frames_per_s, "achieved_tflops": tf,
            "frac_gemm": fraction(tf, lim, p) if lim else None, "mfu_spec": spec_fraction(tf, lim) if lim else None}


def _asked(device):  # the scorer and end-to-end rows: bf16 on CUDA, fp32 on a CPU (as before)
    return "auto" if device == "cuda" else "fp32"


def scorer_rows(device, args, table, lim):
    cases = [("micronbert_tiny", 64, [2 if args.tiny else 64])]
    if not args.tiny:
        cases.append(("micronbert_s8", 224, [64, 256] if device == "cuda" else [4]))
    precision = "bf16+fused" if device == "cuda" else "fp32"  # on CUDA: ModelScorer's auto
    flops = {}
    for name, size, batches in cases:
        flops[name] = pair_flops(name, size, device)
        sc = ModelScorer(create_model(name, backend="auto").to(device), device, precision=_asked(device))
        for b in batches:
            a = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            c = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            reps = 1 if args.tiny else 2 if args.quick or device == "cpu" else 5
            ms = time_ms(lambda: sc(a, c), device, warmup=1, reps=reps)
            table.add(row("scorer", name, size, b, precision, b / ms * 1e3, flops[name], lim))
            print(table.rows[-1], flush=True)
    fl, b = FlowScorer(112), 2 if args.tiny else 32
    a = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8)
    c = torch.randint(0, 256, (b, 3, 112, 112), dtype=torch.uint8)
    ms = time_ms(lambda: fl(a, c), "cpu", warmup=1, reps=1 if args.tiny else 2 if args.quick else 3)
    table.add(row("scorer", "mdmd_flow (OpenCV Farneback, CPU)", 112, b, "fp32", b / ms * 1e3))
    print(table.rows[-1], flush=True)
    return flops


def stream_rows(device, args, table, lim, flops):
    """micronbert_s8 at 224 px as ``spot`` scores a video now: each frame encoded once
    (``ModelScorer.encode``), DMA between the encodings of t - k and t (``pairs``), in fp32 and
    in "auto" (kernels.backend.resolve_precision), beside the route before (fp32, both frames of
    every pair encoded: the "scorer" row in fp32). frames/s = new frames (= pairs) per second."""
    from micronbert.kernels.backend import resolve_precision
    name, size, b = "micronbert_s8", 224, 64 if device == "cuda" else 4
    model = create_model(name, backend="auto").to(device)
    prev = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
    new = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
    reps = 2 if args.quick or device == "cpu" else 5
    for which in dict.fromkeys(("fp32", resolve_precision("auto", device))):
        sc = ModelScorer(model, device, precision=which)
        if which == "fp32":  # today's route in the same run: two encodes per pair, fp32
            ms = time_ms(lambda: sc(prev, new), device, warmup=1, reps=reps)
            table.add(row("scorer, before: both frames of a pair encoded", name, size, b, "fp32",
                          b / ms * 1e3, flops.get(name), lim))
            print(table.rows[-1], flush=True)
        x_prev = sc.encode(prev)
        ms = time_ms(lambda: sc.pairs(x_prev, sc.encode(new)), device, warmup=1, reps=reps)
        table.add(row("stream: each frame encoded once (spot)", name, size, b, which, b / ms * 1e3,
                      stream_flops(sc, x_prev[:1], new[:1]), lim))
        print(table.rows[-1], flush=True)


def end_to_end_rows(device, args, table, lim, flops):
    from micronbert.data.synthetic_long import write_synthetic_long
    seconds = 3 if args.tiny else 5 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_long(tmp, n_subjects=1, videos_per_subject=1, seconds=seconds, fps=30,
                             size=128, nuisance="medium", video=True, progress=False)
        path = os.path.join(tmp, "SAMM_longvideos", "001_1.mp4")
        model = create_model("micronbert_tiny", backend="auto").to(device)
        for name, sc in (("micronbert_tiny", ModelScorer(model, device, precision=_asked(device))),
                         ("mdmd_flow", FlowScorer(112))):
            t = time.perf_counter()
            res = score_video(path, {name: sc}, k=5, window=30, batch=64, progress=False)
            sec = time.perf_counter() - t
            precision = "bf16+fused" if device == "cuda" and name != "mdmd_flow" else "fp32"
            table.add(row("end to end (128 px H.264, decode+face+crop+score)", name, sc.size[0], 64,
                          precision, res["n_frames"] / sec, flops.get(name), lim))
            print(table.rows[-1], flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, a shorter video")
    ap.add_argument("--tiny", action="store_true", help="micronbert_tiny only, a 3 s video (a smoke test)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, batch = ("micronbert_tiny", 2) if args.tiny else ("micronbert_s8", 64 if device == "cuda" else 4)
    lim = machine_limits(device, gemm_shape(get_config(model), batch), quick=args.tiny)
    table = Table("bench_spot", device, limit_notes(lim) + [f"frac_gemm: over the {model} B={batch} GEMM rate"])
    flops = scorer_rows(device, args, table, lim)
    if not args.tiny:
        stream_rows(device, args, table, lim, flops)
    end_to_end_rows(device, args, table, lim, flops)
    table.finish()


if __name__ == "__main__":
    main()
