"""Blockwise-swap gather throughput at 224 px: the authors' per-sample loop, a vectorised
torch route (where, patchify, normalise, cast as separate ops) and the fused kernel.

    python bench/bench_swap.py [--batches 16 64 256]

GB/s counts each input byte read once and each output byte written once (swapped
patches + target, fp16 on a GPU / fp32 on the CPU). Writes bench/results/<device>/bench_swap.*.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import line_plot, series_by, time_ms, write_table  # noqa: E402
from micronbert.kernels import (blockwise_swap_patches, patchify, random_swap_mask,  # noqa: E402
                                triton_unavailable_reason)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def authors_loop(a, b, mask, p, dtype):
    """Their random_replace: a Python loop over samples, after patchify and normalise."""
    mean = torch.tensor(MEAN, device=a.device)
    std = torch.tensor(STD, device=a.device)
    x = patchify(((a.float() / 255).permute(0, 2, 3, 1) - mean).div(std).permute(0, 3, 1, 2), p)
    y = patchify(((b.float() / 255).permute(0, 2, 3, 1) - mean).div(std).permute(0, 3, 1, 2), p)
    target = x.clone()
    for i in range(a.shape[0]):
        idx = mask[i].nonzero().squeeze(-1)
        x[i][idx] = y[i][idx]
    return x.to(dtype), target.to(dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    batches = args.batches or ([16, 64, 256] if device == "cuda" else [16, 64])
    p, size = 8, 224
    rows = []
    for bsz in batches:
        a = torch.randint(0, 256, (bsz, 3, size, size), dtype=torch.uint8, device=device)
        b = torch.randint(0, 256, (bsz, 3, size, size), dtype=torch.uint8, device=device)
        mask = random_swap_mask(bsz, size // p, 0.5, device=device)
        nbytes = 2 * a.numel() + 2 * a.numel() * torch.finfo(dtype).bits // 8
        routes = {"authors_loop": lambda: authors_loop(a, b, mask, p, dtype),
                  "torch_vectorised": lambda: blockwise_swap_patches(
                      a, b, mask, p, MEAN, STD, dtype, return_target=True, backend="reference")}
        if device == "cuda" and triton_unavailable_reason(a) is None:
            routes["fused_triton"] = lambda: blockwise_swap_patches(
                a, b, mask, p, MEAN, STD, dtype, return_target=True, backend="triton")
        if device == "cuda":
            routes["device_copy (bound)"] = lambda: a.clone().view(-1).repeat(
                1 + torch.finfo(dtype).bits // 8)
        for name, fn in routes.items():
            ms = time_ms(fn, device)
            rows.append({"route": name, "B": bsz, "px": size, "out_dtype": str(dtype).replace("torch.", ""),
                         "median_ms": ms, "GB_per_s": nbytes / ms / 1e6})
            print(rows[-1], flush=True)

    def plot(path):
        line_plot(path, series_by(rows, "route", "B", "GB_per_s"), "batch", "GB/s", logx=True)

    write_table("bench_swap", rows, device, plot)


if __name__ == "__main__":
    main()
