"""Where a pre-training step's time goes: torch.profiler's self time of each op of one
step (after warm-up), grouped into GEMMs, casts and copies, the optimiser, the EMA teacher,
softmax, norms, GELU, reductions and other elementwise ops, beside the step's FLOPs and the
machine's GEMM rate measured in the same run.

    python bench/bench_step_profile.py [--model micronbert_s8] [--batch 2] [--precision auto]

Writes bench/results/<device>/bench_step_profile.{csv,md}: per group its milliseconds, its
share of the profiled step, its number of calls; the GEMM row also gives the GEMMs' own
rate (the step's FLOPs, nearly all in GEMMs, over the GEMMs' time) as a fraction of the
measured GEMM rate: the ceiling of the step's frac_gemm if every other op took no time.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from bench_train import one_step, one_step_args  # noqa: E402
from common import Table, fraction, limit_notes  # noqa: E402

# op name (without "aten::") -> group; the first group whose names hold the op wins
GROUPS = {
    "GEMM (mm, bmm, addmm, attention)": ("mm", "bmm", "addmm", "baddbmm", "matmul",
                                         "_scaled_dot_product_flash_attention_for_cpu",
                                         "_scaled_dot_product_flash_attention_for_cpu_backward"),
    "casts and copies": ("copy_", "_to_copy", "cat", "clone", "contiguous", "index", "gather", "scatter"),
    "optimiser (fused AdamW)": ("_fused_adamw_", "_fused_adam_", "_foreach_add_", "_foreach_mul_"),
    "EMA teacher": ("_foreach_lerp_",),
    "softmax": ("_softmax", "_softmax_backward_data", "_log_softmax", "_log_softmax_backward_data"),
    "norms": ("native_layer_norm", "native_layer_norm_backward"),
    "GELU": ("gelu", "gelu_backward"),
    "reductions (sum, mean)": ("sum", "mean", "amax", "max", "min", "all", "any"),
    "elementwise (mul, add, div, ...)": ("mul", "add", "add_", "div", "sub", "where", "fill_", "zero_", "mul_",
                                         "div_", "sub_", "abs", "pow", "sqrt", "exp", "neg", "clamp",
                                         "masked_fill", "smooth_l1_loss", "mse_loss", "smooth_l1_loss_backward",
                                         "mse_loss_backward", "grid_sampler_2d", "grid_sampler_2d_backward"),
}


def group_of(name: str) -> str:
    op = name.split("::", 1)[-1]
    return next((g for g, ops in GROUPS.items() if op in ops), "other")


def main(argv=None):
    args = one_step_args(__doc__, argv, "a short GEMM measurement (smoke runs)")
    from torch.profiler import ProfilerActivity, profile
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prec, step, lim, flops = one_step(args, device)
    for _ in range(2):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as p:
        step()
    times, calls = {}, {}
    for e in p.key_averages():
        if not e.key.startswith("aten::"):
            continue
        g = group_of(e.key)
        own = e.self_device_time_total if device == "cuda" else e.self_cpu_time_total  # CUDA: the kernels' time
        times[g] = times.get(g, 0.0) + own / 1e3
        calls[g] = calls.get(g, 0) + e.count
    total = sum(times.values())
    table = Table("bench_step_profile", device, limit_notes(lim) + [
        f"model {args.model}, B={args.batch}, precision {prec}, route fused (the default); one profiled step "
        f"after 2 warm-up steps; {flops / 1e12:.3f} TFLOP per step (FlopCounterMode, forward + backward)",
        f"profiled step: {total:.0f} ms of aten self time; frac_gemm of the whole step "
        f"{fraction(flops / total * 1e3 / 1e12, lim, prec) or 0:.3f}",
        "gemm_ceiling: the step's FLOPs over the GEMMs' time alone, as a fraction of the measured GEMM "
        "rate: the step's frac_gemm if every other op took no time"])
    for g in sorted(times, key=times.get, reverse=True):
        ceiling = fraction(flops / times[g] * 1e3 / 1e12, lim, prec) if g.startswith("GEMM") else None
        table.add({"group": g, "ms": round(times[g], 1), "share": round(times[g] / total, 3), "calls": calls[g],
                   "gemm_ceiling": round(ceiling, 3) if ceiling else None})
    return table.finish()


if __name__ == "__main__":
    main()
