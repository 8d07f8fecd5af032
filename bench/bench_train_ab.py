"""Pre-training step of micronbert_s8 by route and precision, the routes timed in turn
(A B C A B C ...) so that a shared machine's drifting load falls on all alike: the ratio
of the default CPU route (fused, precision auto) to the authors' route (fp32) in one run.

    python bench/bench_train_ab.py [--rounds 3] [--batch 2]

Writes bench/results/<device>/bench_train_ab.{csv,md}: per route the median step of the
rounds, its speed-up over the authors' fp32 route, and frac_gemm (model FLOP/s over the
machine's GEMM rate in that precision, measured in the same run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from bench_train import make_step, model_flops  # noqa: E402
from common import Table, fraction, gemm_shape, limit_notes, machine_limits  # noqa: E402
from micronbert import get_config  # noqa: E402
from micronbert.kernels.backend import resolve_precision  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="micronbert_s8")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = resolve_precision("auto", device)
    cases = [("authors", "fp32"), ("fused", "fp32"), ("fused", auto)]
    cases = list(dict.fromkeys(cases))
    steps = {c: make_step(c[0], args.model, args.batch, device,
                          torch.autocast(device, dtype=torch.bfloat16) if c[1] == "bf16" else nullcontext())
             for c in cases}
    lim = machine_limits(device, gemm_shape(get_config(args.model), args.batch))
    flops = model_flops(args.model, args.batch, device)
    for s in steps.values():  # warm-up
        s()
    times = {c: [] for c in cases}
    for _ in range(args.rounds):
        for c, s in steps.items():
            t = time.perf_counter()
            s()
            if device == "cuda":
                torch.cuda.synchronize()
            times[c].append(time.perf_counter() - t)
    table = Table("bench_train_ab", device, limit_notes(lim) + [
        f"model {args.model}, B={args.batch}, {args.rounds} rounds in turn; auto here: {auto}"])
    base = statistics.median(times[("authors", "fp32")])
    for (route, prec), ts in times.items():
        sec = statistics.median(ts)
        table.add({"route": route, "precision": prec, "median_s": sec, "steps_s": " ".join(f"{t:.2f}" for t in ts),
                   "speedup_vs_authors_fp32": base / sec, "achieved_tflops": flops / sec / 1e12,
                   "frac_gemm": fraction(flops / sec / 1e12, lim, prec)})
        print(table.rows[-1], flush=True)
    table.finish()


if __name__ == "__main__":
    main()
