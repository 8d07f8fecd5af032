"""Pre-training throughput of micronbert_s8 by route:

  authors   their arithmetic: frames normalised as whole images, explicit softmax attention
            in every block, the per-sample Python swap loop, the N x N DMA (our reference
            path with their swap loop);
  reference our plain PyTorch path (backend="reference": the swap's separate ops);
  fused     backend="auto": Triton DMA and the one-pass uint8 swap on CUDA, SDPA (on the CPU:
            the faster of the reference and chunked DMA by size, the torch swap);
  compiled  fused + torch.compile (the ops are custom operators: no graph breaks).

Every route is fed what the loader gives: uint8 frames (B, 3, 224, 224) on the device.

    python bench/bench_train.py                 # GPU: B in {16, 64}, bf16 autocast
    python bench/bench_train.py                 # a CPU: B=2, auto (bf16 autocast where native)
    python bench/bench_train.py --routes authors fused --precision fp32 auto  # the CPU target
    python bench/bench_train.py --model micronbert_tiny --batches 1 --routes reference fused  # smoke

images/s counts pairs per second of full training steps (forward, backward, AdamW);
model FLOPs are counted once (torch.utils.flop_counter on the reference route, fwd+bwd);
frac_gemm = achieved model FLOP/s over the machine's own GEMM rate at the model's MLP shape
in the same precision, measured in the same run (common.machine_limits); on a GPU
mfu_spec = the same over the spec sheet's dense bf16 peak (an assumption, common.SPEC_SHEET).
Writes bench/results/<device>/bench_train.{csv,md,png}, a row as each route is timed.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import micronbert.model as M  # noqa: E402
from common import (Table, fraction, gemm_shape, limit_notes, line_plot, machine_limits,  # noqa: E402
                    peak_mb, series_by, spec_fraction, time_ms)
from micronbert import create_model, get_config  # noqa: E402
from micronbert.kernels import patchify, random_swap_mask  # noqa: E402
from micronbert.kernels.backend import resolve_precision  # noqa: E402
from micronbert.train import make_optimizer  # noqa: E402


def authors_swap(frame_a, frame_b, mask, p, mean=None, std=None, out_dtype=None, **_):
    """Their pipeline: ToTensor + Normalize on whole frames, then random_replace, a Python
    loop over the samples."""
    def prep(f):
        f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
        if mean is not None:
            m, s = (torch.tensor(v, device=f.device).view(1, -1, 1, 1) for v in (mean, std))
            f = (f - m) / s
        return patchify(f, p)
    x, y = prep(frame_a), prep(frame_b)
    s = x.clone()
    for i in range(x.shape[0]):
        idx = mask[i].nonzero().squeeze(-1)
        s[i][idx] = y[i][idx]
    return s, x, y


def make_step(route, name, batch, device, amp):
    torch.manual_seed(0)
    backend = "reference" if route in ("authors", "reference") else "auto"
    model = create_model(name, backend=backend).to(device).train()
    opt = make_optimizer(model, 1e-4)
    x, y = frames(model.config, batch, device)
    mask = random_swap_mask(batch, model.config.grid, 0.5, device=device)
    net = torch.compile(model) if route == "compiled" else model
    swap = authors_swap if route == "authors" else M.blockwise_swap_patches

    def step():
        M.blockwise_swap_patches, saved = swap, M.blockwise_swap_patches
        try:
            with amp:
                out = net(x, y, swap_mask=mask)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            model.update_teacher(0.996)
        finally:
            M.blockwise_swap_patches = saved
    return step


def one_step_args(doc, argv, quick_help):
    """The flags of the one-step studies (bench_step_profile, bench_step_gemms)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="micronbert_s8")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap.parse_args(argv)


def one_step(args, device):
    """(precision, step, limits, FLOPs): the default (fused) route's training step of
    ``args.model`` at ``args.batch`` in the resolved precision, the machine's limits measured
    now, and the step's FLOPs."""
    prec = resolve_precision(args.precision, device)
    amp = torch.autocast(device, dtype=torch.bfloat16) if prec == "bf16" else nullcontext()
    step = make_step("fused", args.model, args.batch, device, amp)
    lim = machine_limits(device, gemm_shape(get_config(args.model), args.batch), quick=args.quick)
    return prec, step, lim, model_flops(args.model, args.batch, device)


def frames(config, batch, device):
    """A uint8 pair as the loader gives it: I_t and I_{t+d} a few grey levels apart."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 250, (batch, 3, *config.img_size), dtype=torch.uint8, generator=g)
    y = x + torch.randint(0, 6, x.shape, dtype=torch.uint8, generator=g)
    return x.to(device), y.to(device)


def model_flops(name, batch, device):
    from torch.utils.flop_counter import FlopCounterMode
    model = create_model(name, backend="reference").to(device).train()
    x, y = frames(model.config, batch, device)
    with FlopCounterMode(display=False) as fc:
        mask = random_swap_mask(batch, model.config.grid, 0.5, device=device)
        model(x, y, swap_mask=mask)["loss"].backward()
    return fc.get_total_flops()


def time_route(route, args, b, device, precision, flops, lim) -> dict:
    """One row: ``route``'s training step at batch ``b`` in ``precision`` (fp32 | bf16 autocast)."""
    amp = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    step = make_step(route, args.model, b, device, amp)
    ms = time_ms(step, device, warmup=2 if route != "compiled" else 3, reps=args.reps)
    tflops = flops / ms / 1e9
    return {"route": route, "B": b, "precision": precision, "median_ms": ms,
            "images_per_s": b / ms * 1e3, "model_tflop_per_step": flops / 1e12,
            "achieved_tflops": tflops, "frac_gemm": fraction(tflops, lim, precision),
            "mfu_spec": spec_fraction(tflops, lim), "peak_mb": peak_mb(step, device)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="micronbert_s8", help="named config")
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--routes", nargs="+", default=["authors", "reference", "fused", "compiled"])
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), nargs="+", default=["auto"],
                    help="one or more, each route timed in each: auto = kernels.backend.resolve_precision "
                         "(bf16 autocast on CUDA and CPUs with native bf16, else fp32)")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per route (the median is kept)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = args.batches or ([16, 64] if device == "cuda" else [2])
    precisions = list(dict.fromkeys(resolve_precision(p, device) for p in args.precision))
    lim = machine_limits(device, gemm_shape(get_config(args.model), max(batches)), quick=args.reps < 2)
    table = Table("bench_train", device, limit_notes(lim) + [
        f"model {args.model}, precision {' and '.join(precisions)} (auto here: {resolve_precision('auto', device)})"])
    for b in batches:
        flops = model_flops(args.model, b, device)
        for precision in precisions:
            for route in args.routes:
                table.add(time_route(route, args, b, device, precision, flops, lim))
                print(table.rows[-1], flush=True)

    def plot(path):
        rows = [dict(r, series=f"{r['route']} {r['precision']}") for r in table.rows]
        line_plot(path, series_by(rows, "series", "B", "images_per_s"), "batch", "images/s", logx=True)

    table.finish(plot)


if __name__ == "__main__":
    main()
