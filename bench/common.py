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

from micronbert.kernels.roofline import SPEC_SHEET

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


def time_ms(fn, device: str, warmup: int = 2, reps: int = 5, stat=statistics.median) -> float:
    """Median (or ``stat``) wall time of fn() in ms (CUDA: synchronised events)."""
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
    return stat(times)


def peak_mb(fn, device: str):
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def results_folder(device: str) -> str:
    """$MICRONBERT_BENCH_OUT (bench/gpu.sh) or bench/results/<device>/."""
    folder = os.environ.get("MICRONBERT_BENCH_OUT") or os.path.join(
        RESULTS, device_name(device).replace(" ", "_"))
    os.makedirs(folder, exist_ok=True)
    return folder


class Table:
    """A results table written as it grows: each ``add`` appends its row to <name>.csv and
    rewrites <name>.md, so a run stopped by a time limit keeps every row measured before.

    Args: name (file stem), device ("cuda"/"cpu"), notes (lines for the Markdown header).
    """

    def __init__(self, name: str, device: str, notes=()):
        self.name, self.device, self.notes, self.rows = name, device, list(notes), []
        self.folder = results_folder(device)
        self.path = os.path.join(self.folder, name)
        for ext in (".csv", ".md"):  # no stale rows of an earlier run beside this run's
            if os.path.exists(self.path + ext):
                os.remove(self.path + ext)

    def add(self, row: dict) -> None:
        first = not self.rows
        if not first and list(row) != list(self.rows[0]):
            raise ValueError(f"{self.name}: row columns {list(row)} differ from {list(self.rows[0])}")
        self.rows.append(row)
        with open(self.path + ".csv", "w" if first else "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if first:
                w.writeheader()
            w.writerow(row)
        self._write_md()

    def note(self, line: str) -> None:
        self.notes.append(line)
        if self.rows:
            self._write_md()

    def markdown(self) -> str:
        cols = list(self.rows[0]) if self.rows else []
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("n/a" if v is None else str(v))  # noqa: E731
        md = [f"# {self.name}", "", f"- device: {device_name(self.device)}", f"- versions: {versions()}",
              f"- command: `{' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])}`",
              f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
        md += [f"- {n}" for n in self.notes] + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        md += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in self.rows]
        return "\n".join(md) + "\n"

    def _write_md(self) -> None:
        with open(self.path + ".md", "w") as f:
            f.write(self.markdown())

    def finish(self, plot=None) -> str:
        """Draws ``plot(path)`` (a PNG) when there are rows; prints the table; returns the folder."""
        if plot is not None and self.rows:
            plot(self.path + ".png")
        print(self.markdown())
        return self.folder


def write_table(name: str, rows: list, device: str, plot=None, notes=()) -> str:
    """bench/results/<device>/<name>.{csv,md} (+ png), or $MICRONBERT_BENCH_OUT/<name>.*
    when that is set (bench/gpu.sh); prints the Markdown table."""
    table = Table(name, device, notes)
    for r in rows:
        table.add(r)
    return table.finish(plot)


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


# --------------------------------------------------------------------------
# The machine's limits, beside every speed
# --------------------------------------------------------------------------
# Spec-sheet figures: ASSUMPTIONS from the vendors' data sheets, never measured here (dense bf16
# tensor-core TFLOP/s, HBM TB/s; the first name found in the device's name wins):
# micronbert.kernels.roofline.SPEC_SHEET, the one source the roofline predicts with too.


def spec_sheet(device: str):
    """(name, dense bf16 TFLOP/s, HBM TB/s) of the device from SPEC_SHEET, or None."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next(((k, tf, tb) for k, tf, tb in SPEC_SHEET if k in name), None)


def gemm_shape(config, batch: int, frames: int = 2):
    """(M, K, N) of the model's widest GEMM (the MLP's first layer) over ``frames`` encoded
    images of ``batch`` pairs: M tokens, K = embed_dim, N = mlp_ratio * embed_dim."""
    h, w = config.img_size
    tokens = batch * frames * (h // config.patch_size) * (w // config.patch_size)
    return tokens, config.embed_dim, int(config.mlp_ratio * config.embed_dim)


def gemm_tflops(m: int, k: int, n: int, dtype, device: str, reps: int = 3) -> float:
    """Best achieved TFLOP/s of ``reps`` torch.matmul (M x K) @ (K x N) in ``dtype`` (CPU bf16:
    oneDNN's bf16 kernels, AMX where the CPU has it): a limit, so the fastest run counts."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    return 2.0 * m * k * n / time_ms(lambda: a @ b, device, 2, reps, min) / 1e9


def copy_gbps(device: str, mib: int = 256, reps: int = 3) -> float:
    """Best achieved GB/s of ``reps`` tensor copies (bytes read + bytes written)."""
    x = torch.empty(mib * 2**18, device=device)
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / time_ms(lambda: y.copy_(x), device, 1, reps, min) / 1e6


def machine_limits(device: str, shape, quick: bool = False) -> dict:
    """The machine's own rates, measured now: GEMM TFLOP/s at ``shape`` (M, K, N) in fp32
    and bf16 (CUDA: bf16 only, plus an 8192-cube for the tensor cores' best) and copy GB/s;
    with the spec-sheet peaks (CUDA, known GPUs) labelled as such."""
    m, k, n = shape
    reps = 3 if quick else 5
    out = {"device": device, "shape": f"{m}x{k}x{n}", "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device != "cuda":
        out["fp32"] = gemm_tflops(m, k, n, torch.float32, device, reps)
    out["bf16"] = gemm_tflops(m, k, n, torch.bfloat16, device, reps)
    if device == "cuda" and not quick:
        out["bf16_8192"] = gemm_tflops(8192, 8192, 8192, torch.bfloat16, device, reps)
    out["copy_gbps"] = copy_gbps(device, 1024 if device == "cuda" else (16 if quick else 256), reps)
    out["spec"] = spec_sheet(device)
    return out


def limit_notes(lim: dict) -> list:
    """Header lines of a table: the measured rates, the spec sheet's, and the load."""
    rates = ", ".join(f"{k} {lim[k] * 1e3:.4g} GFLOP/s" for k in ("fp32", "bf16", "bf16_8192") if k in lim)
    lines = [f"machine limits measured in this run: GEMM ({lim['shape']}, M x K x N, torch.matmul) {rates}; "
             f"copy {lim['copy_gbps']:.4g} GB/s"]
    if lim["spec"]:
        name, tf, tb = lim["spec"]
        lines.append(f"spec-sheet ASSUMPTION (not measured), {name}: {tf:g} dense bf16 TFLOP/s, {tb:g} TB/s")
    if lim["device"] != "cuda" and lim["load"] is not None:
        lines.append(f"load average {lim['load']:.2f} on {os.cpu_count()} cores at the start: on a shared "
                     "machine other jobs run alongside, so rates and times are noisy (a frac_gemm above 1: "
                     "other jobs slowed the GEMM more than the timed op)")
    return lines


def fraction(tflops, lim: dict, precision: str):
    """Achieved TFLOP/s over the measured GEMM rate of the same precision (None if unknown)."""
    rate = lim.get(precision)
    return None if tflops is None or not rate else tflops / rate


def spec_fraction(tflops, lim: dict):
    """Achieved TFLOP/s over the spec sheet's dense bf16 peak (an assumption), or None."""
    return None if tflops is None or not lim["spec"] else tflops / lim["spec"][1]
