"""Shared benchmark helpers: device and versions, timing, one results table per device."""
from __future__ import annotations

import csv
import os
import platform
import shlex
import statistics
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def versions() -> str:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    try:
        import triton
        parts.append(f"triton {triton.__version__}")
    except Exception:
        pass
    if torch.cuda.is_available():
        parts.append(f"cuda {torch.version.cuda}")
    return ", ".join(parts)


def time_ms(fn, device: str, warmup: int = 2, reps: int = 5) -> float:
    """Median wall time of fn() in ms (CUDA: synchronised events)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def peak_mb(fn, device: str):
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def write_table(name: str, rows: list, device: str, plot=None) -> str:
    """bench/results/<device>/<name>.{csv,md} (+ png), or $MICRONBERT_BENCH_OUT/<name>.*
    when that is set (bench/gpu.sh); prints the Markdown table."""
    folder = os.environ.get("MICRONBERT_BENCH_OUT") or os.path.join(
        RESULTS, device_name(device).replace(" ", "_"))
    os.makedirs(folder, exist_ok=True)
    cols = list(rows[0])
    with open(os.path.join(folder, f"{name}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("n/a" if v is None else str(v))  # noqa: E731
    md = [f"# {name}", "", f"- device: {device_name(device)}", f"- versions: {versions()}",
          f"- command: `{' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])}`",
          f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    text = "\n".join(md) + "\n"
    with open(os.path.join(folder, f"{name}.md"), "w") as f:
        f.write(text)
    if plot is not None:
        plot(os.path.join(folder, f"{name}.png"))
    print(text)
    return folder


def line_plot(path, series: dict, xlabel: str, ylabel: str, logx=False, logy=True, rotate=0):
    """One line per name in ``series`` (name -> (xs, ys)), saved as a PNG."""
    try:
        import matplotlib
    except ImportError:  # a bare machine (bench/gpu.sh): the tables are written, no picture
        print(f"[bench] matplotlib is not installed: {os.path.basename(path)} not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.tick_params(axis="x", rotation=rotate, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def series_by(rows, key: str, x: str, y: str) -> dict:
    """{rows[key]: (xs, ys)} in first-seen order, for line_plot."""
    return {k: tuple(zip(*[(r[x], r[y]) for r in rows if r[key] == k]))
            for k in dict.fromkeys(r[key] for r in rows)}
