"""The pre-training step's GEMMs one by one: every matrix product of one training step
(its op, operand shapes and layouts), timed inside the step and again alone on fresh
operands of the same shapes, strides and dtype, beside the GEMM rate measured in the same
run at the model's MLP shape (the rate frac_gemm is taken against).

    python bench/bench_step_gemms.py [--model micronbert_s8] [--batch 2] [--precision auto] [--quick]

Writes bench/results/<device>/bench_step_gemms.{csv,md}: one row per distinct GEMM (op,
shapes, layout), slowest first, with its calls, GFLOP per call, milliseconds in the step and
alone, and its rate in the step and alone as a fraction of the reference rate. The header
gives the step's frac_gemm and what would bound it:

- ``gemms_alone``: the step's FLOPs over the summed alone time of its GEMMs: the most
  frac_gemm could be with every other op taking no time and each GEMM as fast as torch runs
  it alone at its shape and layout;
- ``gemms_at_reference``: frac_gemm if every GEMM ran at the reference rate and every other
  op took the time it takes now.

The step's FLOPs are FlopCounterMode's on the reference route (bench_train.model_flops), the
same count as every frac_gemm; a GEMM's own are FlopCounterMode's, or torch's SDPA formulas
for the CPU flash-attention ops it does not count.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

from bench_train import one_step, one_step_args  # noqa: E402
from common import Table, limit_notes, time_ms  # noqa: E402

aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default,
         aten._scaled_dot_product_flash_attention_for_cpu.default,
         aten._scaled_dot_product_flash_attention_for_cpu_backward.default}


class GemmRecorder(TorchDispatchMode):
    """Records each GEMM call's op, its arguments' shapes/strides/dtypes and its time
    (perf_counter around the call; CPU: the op runs synchronously)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in GEMMS:
            return func(*args, **kwargs)
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        self.calls.append((func, [spec(a) for a in args], {k: spec(v) for k, v in kwargs.items()},
                           time.perf_counter() - t0))
        return out


def spec(a):
    """A tensor argument as (shape, strides, dtype); other arguments as they are."""
    return ("T", tuple(a.shape), a.stride(), a.dtype) if torch.is_tensor(a) else a


def fresh(s, device):
    """A fresh random tensor of the recorded shape, strides and dtype (or the recorded value)."""
    if not (isinstance(s, tuple) and s and s[0] == "T"):
        return s
    _, shape, stride, dtype = s
    n = 1 + sum((size - 1) * st for size, st in zip(shape, stride))  # storage, broadcast (stride 0) too
    base = torch.randn(n, device=device).to(dtype) if dtype.is_floating_point else \
        torch.zeros(n, dtype=dtype, device=device)
    return base.as_strided(shape, stride)


def layout(specs) -> str:
    """'N' per row-major operand, 'T' per transposed one (its last dimension not contiguous)."""
    mats = [s for s in specs if isinstance(s, tuple) and s and s[0] == "T" and len(s[1]) >= 2]
    return "".join("T" if s[2][-1] != 1 and s[1][-1] > 1 else "N" for s in mats)


def label(func, specs) -> str:
    shapes = [s[1] for s in specs if isinstance(s, tuple) and s and s[0] == "T"]
    name = func.__name__.split(".")[0].replace("_scaled_dot_product_flash_attention_for_cpu", "sdpa_flash_cpu")
    return name + " " + " x ".join("[" + ",".join(map(str, sh)) + "]" for sh in shapes)


def alone(func, specs, device, reps: int, kwspecs=None):
    """(seconds per call, median of ``reps`` after one warm-up; FLOPs per call) on fresh operands."""
    args = [fresh(s, device) for s in specs]
    kwargs = {k: fresh(v, device) for k, v in (kwspecs or {}).items()}
    with FlopCounterMode(display=False) as fc:
        func(*args, **kwargs)
    flop = fc.get_total_flops() or sdpa_flop(func, args)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        func(*args, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), flop


def sdpa_flop(func, args) -> int:
    """FLOPs of the CPU flash-attention ops, which FlopCounterMode does not count (torch's own
    SDPA formulas: q, k, v first; the backward's grad_out first)."""
    if func == aten._scaled_dot_product_flash_attention_for_cpu.default:
        return sdpa_flop_count(*(a.shape for a in args[:3]))
    if func == aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        return sdpa_backward_flop_count(*(a.shape for a in args[:4]))
    return 0


def main(argv=None):
    args = one_step_args(__doc__, argv, "fewer repeats (smoke runs)")
    device = "cpu"  # the recorder times calls with perf_counter: on CUDA that is launch time
    prec, step, lim, flops = one_step(args, device)
    ref = lim[prec] * 1e12  # FLOP/s
    step_s = time_ms(step, device, warmup=2, reps=3 if args.quick else 5) / 1e3
    rec = GemmRecorder()
    with rec:
        step()
    groups = {}
    for func, specs, kwspecs, dt in rec.calls:
        key = (func, repr(specs), repr(kwspecs))
        g = groups.setdefault(key, {"func": func, "specs": specs, "kw": kwspecs, "calls": 0, "in_step": 0.0})
        g["calls"] += 1
        g["in_step"] += dt
    reps = 3 if args.quick else 7
    rows = []
    for g in groups.values():
        sec, f = alone(g["func"], g["specs"], device, reps, g["kw"])
        rows.append({"gemm": label(g["func"], g["specs"]), "layout": layout(g["specs"]), "calls": g["calls"],
                     "gflop_per_call": round(f / 1e9, 3), "ms_in_step": round(g["in_step"] * 1e3, 2),
                     "ms_alone": round(sec * g["calls"] * 1e3, 2),
                     "frac_in_step": round(f * g["calls"] / g["in_step"] / ref, 3) if g["in_step"] else None,
                     "frac_alone": round(f / sec / ref, 3) if sec else None,
                     "_flop": f * g["calls"], "_in_step": g["in_step"], "_alone": sec * g["calls"]})
    rows.sort(key=lambda r: r["ms_in_step"], reverse=True)
    gemm_flop = sum(r["_flop"] for r in rows)
    in_step = sum(r["_in_step"] for r in rows)
    alone_s = sum(r["_alone"] for r in rows)
    rest = max(step_s - in_step, 0.0)
    table = Table("bench_step_gemms", device, limit_notes(lim) + [
        f"model {args.model}, B={args.batch}, precision {prec}, route fused (the default); "
        f"{flops / 1e12:.3f} TFLOP per step (FlopCounterMode), {gemm_flop / flops:.0%} of it in the GEMMs below",
        f"step {step_s * 1e3:.0f} ms (median, no recorder): frac_gemm {flops / step_s / ref:.3f}; its GEMMs "
        f"{in_step * 1e3:.0f} ms inside the recorded step, {alone_s * 1e3:.0f} ms each run alone; "
        f"everything else {rest * 1e3:.0f} ms",
        f"gemms_alone: {flops / alone_s / ref:.3f} (frac_gemm with every other op free and each GEMM as fast as alone)",
        f"gemms_at_reference: {flops / (gemm_flop / ref + rest) / ref:.3f} (every GEMM at the reference rate, "
        "every other op as now)",
        "layout: N = row-major operand, T = transposed (last dimension not contiguous); "
        "frac_*: the GEMM's rate over the reference rate"])
    for r in rows:
        for k in ("_flop", "_in_step", "_alone"):
            r.pop(k)
        table.add(r)
    return table.finish(plot=lambda path: bar_plot(path, rows[:16]))


def bar_plot(path, rows):
    """The slowest GEMMs' rates in the step and alone, as fractions of the reference rate."""
    try:
        import matplotlib
    except ImportError:
        print(f"[bench] matplotlib is not installed: {os.path.basename(path)} not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    ys = range(len(rows))[::-1]
    names = [f"{r['gemm'][:48]} {r['layout']} ({r['ms_in_step']:.0f} ms)" for r in rows]
    ax.barh([y + 0.2 for y in ys], [r["frac_in_step"] or 0 for r in rows], height=0.4, label="in the step")
    ax.barh([y - 0.2 for y in ys], [r["frac_alone"] or 0 for r in rows], height=0.4, label="alone")
    ax.axvline(0.4, color="k", ls="--", lw=0.8)
    ax.set_yticks(list(ys), names, fontsize=6)
    ax.set_xlabel("rate / the reference GEMM rate (MLP shape, same run)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
