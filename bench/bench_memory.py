"""Peak memory of a pre-training step, measured, beside micronbert/memory.py's estimate
(the calibration table of docs/method.md, "Memory of a training step").

Each case (config, micro-batch, backend, precision) runs in a fresh Python process, so peaks
do not mix: the real loader (data.loaders.pretrain_loader on a small synthetic corpus) makes
the case's batches first; then the peak is reset and the model is built, and ``steps`` real
pre-training steps run (train.setup_run + train.train_step: autocast, backward, fused AdamW,
the EMA teacher). Measured: the process's peak resident set (VmHWM) after the steps minus
its resident set (VmRSS) just before the model is built, where the peak is reset
(``/proc/self/clear_refs`` 5; where that fails, the growth of ``getrusage``'s ru_maxrss, a
lower bound). The estimate is ``memory.estimate_training_bytes`` with the bytes per
activation element that the pretrain guard uses for that precision
(``memory.activation_elem_bytes``, e.g. on a CPU 4 in fp32 and under bf16 autocast).

    python bench/bench_memory.py            # the table (bench/results/<device>/memory.*), ~7 min on 2 cores
    python bench/bench_memory.py --fit      # + PIXEL_ELEMS and RUNTIME_BYTES fitted to the rows
    python bench/bench_memory.py --fit --from bench/results/cpu-x86_64-2cores/memory.csv  # fit only
    python bench/bench_memory.py --quick    # smoke: micronbert_tiny, batch 8, default precision

``--fit`` prints least-squares values of the two fitted constants; it changes nothing.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MIB = 2 ** 20
# (config, micro-batch, backend): the cases of docs/method.md's table
CASES = [("micronbert_tiny", 8, "auto"), ("micronbert_tiny", 32, "auto"),
         ("micronbert_tiny", 64, "auto"), ("micronbert_tiny", 32, "reference"),
         ("micronbert_s8", 1, "auto"), ("micronbert_s8", 2, "auto")]
QUICK = [("micronbert_tiny", 8, "auto")]


# ------------------------------------------------------------------ in the fresh process
def _status_kib(key: str):
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
    except (OSError, StopIteration):
        return None


def reset_peak() -> tuple:
    """(baseline KiB, how the peak is read): resets VmHWM to the current VmRSS where Linux
    allows it, else the baseline is ru_maxrss so far (growth above it: a lower bound)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS"), "VmHWM"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def peak_kib(how: str) -> int:
    return _status_kib("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(case: dict) -> dict:
    """``case``'s peak growth over its training steps, in this process (see the module doc).
    Returns {"precision" (the resolved one), "peaks_mib" (after each step), "method", "threads"}."""
    import torch

    from micronbert import create_model, get_config
    from micronbert.data.loaders import pretrain_loader
    from micronbert.data.pairs import find_clips
    from micronbert.train import TrainConfig, setup_run, train_step
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    loader = pretrain_loader(find_clips(case["corpus"]), get_config(case["config"]), batch=case["batch"],
                             workers=1, prefetch=0, samples_per_epoch=case["batch"] * case["steps"])
    batches = list(loader)[:case["steps"]]  # the loader's own batches, made before the baseline
    del loader
    gc.collect()
    base, how = reset_peak()
    model = create_model(case["config"], backend=case["backend"])
    peaks = []
    with tempfile.TemporaryDirectory() as out:
        run = setup_run(model, batches, TrainConfig(steps=case["steps"], precision=case["precision"]),
                        out, device="cpu")
        for step in range(case["steps"]):
            train_step(run, step)
            peaks.append((peak_kib(how) - base) / 1024)
        run.log.close()
    return {"precision": run.precision, "peaks_mib": peaks, "method": how,
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------ the estimate and its fit
def components(config: str, batch: int, backend: str, elem_bytes: int) -> dict:
    """The estimate (bytes) of a case, split as the fit needs it: ``pixel`` = the bytes per
    unit of PIXEL_ELEMS (B * e * C*H*W), ``other`` = all but RUNTIME_BYTES and the pixel term."""
    from micronbert import create_model
    from micronbert import memory
    model = create_model(config, backend=backend)
    c = model.config
    pixel = batch * elem_bytes * c.in_chans * c.img_size[0] * c.img_size[1]
    est = memory.estimate_training_bytes(model, batch, elem_bytes)
    return {"estimate": est, "pixel": pixel, "other": est - memory.RUNTIME_BYTES - memory.PIXEL_ELEMS * pixel}


def fit(rows) -> tuple:
    """Least squares of measured = runtime + other + pixel_elems * pixel over ``rows``
    (dicts of bytes: "measured", "other", "pixel"). Returns (runtime bytes, pixel_elems)."""
    xs = [r["pixel"] for r in rows]
    ys = [r["measured"] - r["other"] for r in rows]
    n = len(rows)
    mx, my = sum(xs) / max(n, 1), sum(ys) / max(n, 1)
    var = sum((x - mx) ** 2 for x in xs)
    if n < 2 or var == 0:
        raise ValueError(f"--fit needs rows of at least two different batches or image sizes, got {n} row(s)")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
    return my - slope * mx, slope


def report_fit(rows, out=sys.stdout) -> None:
    """Prints the fitted constants (all rows, then each precision) beside the current ones,
    and each row's estimate / measured under the fit over all rows."""
    from micronbert import memory
    print(f"current: RUNTIME_BYTES = {memory.RUNTIME_BYTES / MIB:.0f} MiB, PIXEL_ELEMS = {memory.PIXEL_ELEMS}",
          file=out)
    groups = {"all rows": rows}
    for p in dict.fromkeys(r["precision"] for r in rows):
        groups[f"precision {p}"] = [r for r in rows if r["precision"] == p]
    for name, group in groups.items():
        try:
            runtime, pix = fit(group)
        except ValueError as e:
            print(f"fit over {name}: {e}", file=out)
            continue
        ratios = [(runtime + r["other"] + pix * r["pixel"]) / r["measured"] for r in group]
        print(f"fit over {name} ({len(group)}): RUNTIME_BYTES = {runtime / MIB:.0f} MiB, PIXEL_ELEMS = "
              f"{pix:.1f}; estimate / measured {min(ratios):.3f} .. {max(ratios):.3f}", file=out)


# ------------------------------------------------------------------ the parent: one process a case
def run_case(case: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(case)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"bench_memory: case {case['config']} batch {case['batch']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def table_row(case: dict, got: dict) -> tuple:
    """(the table's row, the fit's bytes) of a measured case."""
    from micronbert import memory
    e = memory.activation_elem_bytes("cpu", got["precision"])
    comp = components(case["config"], case["batch"], case["backend"], e)
    measured = got["peaks_mib"][-1]
    precision = got["precision"] + (" (auto)" if case["precision"] == "auto" else "")
    row = {"config": case["config"], "batch": case["batch"], "backend": case["backend"],
           "precision": precision, "elem_bytes": e, "estimate_mib": comp["estimate"] / MIB,
           "measured_mib": measured, "after_step1_mib": got["peaks_mib"][0],
           "ratio": comp["estimate"] / MIB / measured if measured > 0 else float("nan")}
    return row, dict(comp, measured=measured * MIB, precision=got["precision"])


def measure_all(args, corpus: str) -> list:
    """Measures every case in each precision, a row added to the table as each ends."""
    from common import Table
    from micronbert.memory import activation_elem_bytes
    cases = QUICK if args.quick else CASES
    precisions = ["auto"] if args.quick else args.precision
    table = Table("memory_quick" if args.quick else "memory", "cpu", [
        f"{args.steps} pre-training steps per case (train.train_step on the loader's batches), each case "
        "in a fresh process; measured = peak RSS (VmHWM) after the steps - RSS just before the model is "
        "built; after_step1 = the same after the first step (AdamW's moments are made at its end)",
        "estimate = micronbert.memory.estimate_training_bytes with elem_bytes as the pretrain guard "
        f"takes it (memory.activation_elem_bytes: on a CPU {activation_elem_bytes('cpu', 'fp32')} in fp32, "
        f"{activation_elem_bytes('cpu', 'bf16')} under bf16 autocast); ratio = estimate / measured"])
    fit_rows = []
    for config, batch, backend in cases:
        for p in precisions:
            case = {"config": config, "batch": batch, "backend": backend, "precision": p,
                    "steps": args.steps, "corpus": corpus, "threads": args.threads}
            got = run_case(case)
            row, comp = table_row(case, got)
            if not fit_rows:
                table.note(f"peak read from {got['method']}; {got['threads']} torch threads per process")
            table.add(row)
            fit_rows.append(comp)
            print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table.finish()
    return fit_rows


def rows_from_csv(path: str) -> list:
    """The fit's bytes of each row of a memory.csv written by this script."""
    out = []
    with open(path) as f:
        for r in csv.DictReader(f):
            comp = components(r["config"], int(r["batch"]), r["backend"], int(r["elem_bytes"]))
            out.append(dict(comp, measured=float(r["measured_mib"]) * MIB, precision=r["precision"]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", nargs="+", choices=("fp32", "auto", "bf16"), default=["fp32", "auto"],
                    help="each case is measured in each (auto: the default of pretrain, bf16 autocast "
                         "on CPUs with native bf16)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per case (default 4: the peak rises over the first 2 to 4 steps, "
                         "AdamW's moments made after the first and the allocator's blocks after that; "
                         "--quick: 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="smoke: one case (micronbert_tiny, batch 8), "
                                                         "memory_quick.*")
    ap.add_argument("--fit", action="store_true", help="print PIXEL_ELEMS and RUNTIME_BYTES fitted to the rows")
    ap.add_argument("--from", dest="from_csv", default=None, help="with --fit: fit a memory.csv, measure nothing")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 4)
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.from_csv:
        if not args.fit:
            ap.error("--from is for --fit")
        return report_fit(rows_from_csv(args.from_csv))
    from micronbert.data.synthetic import write_synthetic_dataset
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_synthetic_dataset(os.path.join(tmp, "corpus"), n_subjects=1, clips_per_class=1,
                                         progress=False)
        rows = measure_all(args, corpus)
    if args.fit:
        report_fit(rows)


if __name__ == "__main__":
    main()
