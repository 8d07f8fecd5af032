"""Which CPU path is fastest at micronbert_s8's shapes, in fp32 and in bf16: the measurements
behind what ``backend="auto"`` and ``precision="auto"`` pick on a CPU (kernels/backend.py).

  dma        DMA between two frames' tokens (B=2 pairs, 1 head, N=784, d=512), forward and
             backward: "reference" (N x N scores) vs "torch" (rows in chunks)
  attention  one encoder block's self-attention (B=4 frames, 4 heads, N=785, d=128), forward
             and backward: SDPA vs the explicit softmax(QK^T)V
  encoder    the encoder's inference pass over 4 frames (spot, evaluate), eager vs
             torch.compile (with --compile: minutes to compile on 2 cores)

bf16 rows run under ``torch.autocast("cpu", torch.bfloat16)`` (inputs in bf16), as a run with
precision bf16 does. Writes bench/results/<device>/bench_cpu_route.{csv,md}, a row at a time.

    python bench/bench_cpu_route.py [--reps 3] [--compile]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import Table, gemm_shape, limit_notes, machine_limits, time_ms  # noqa: E402
from micronbert import create_model, get_config  # noqa: E402
from micronbert.kernels import diagonal_micro_attention  # noqa: E402
from micronbert.kernels.backend import precision as autocast_of  # noqa: E402


def fwd_bwd(fn, *shapes, dtype, backward=True):
    """A closure timing fn's forward (and backward) on fresh leaves of ``shapes`` in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(s, generator=g).to(dtype).requires_grad_(backward) for s in shapes]

    def step():
        out = fn(*xs)
        if not backward:
            return
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
    return step


def explicit_attention(q, k, v):
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v


def op_rows(table, reps):
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    dma = (2, 1, 784, 512)
    att = (4, 4, 785, 128)
    cases = [("dma", "reference", lambda q, k, v: diagonal_micro_attention(q, k, v, return_diag=True,
                                                                          backend="reference"), dma),
             ("dma", "torch (chunked)", lambda q, k, v: diagonal_micro_attention(q, k, v, return_diag=True,
                                                                                backend="torch"), dma),
             ("attention", "sdpa", F.scaled_dot_product_attention, att),
             ("attention", "explicit softmax", explicit_attention, att)]
    for (what, variant, fn, shape), (name, dtype), mode in itertools.product(
            cases, dtypes.items(), ("fwd+bwd", "infer")):
        step = fwd_bwd(fn, shape, shape, shape, dtype=dtype, backward=mode == "fwd+bwd")
        with torch.set_grad_enabled(mode == "fwd+bwd"):
            ms = time_ms(step, "cpu", warmup=1, reps=reps)
        table.add({"what": what, "variant": variant, "precision": name, "shape": "x".join(map(str, shape)),
                   "mode": mode, "median_ms": ms})
        print(table.rows[-1], flush=True)


def encoder_rows(table, reps, compile_too):
    model = create_model("micronbert_s8").eval()
    x = model.patchify(torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8))
    variants = [("eager", model.backbone)]
    if compile_too:
        variants.append(("torch.compile", torch.compile(model.backbone)))
    for variant, net in variants:
        for name in ("fp32", "bf16"):
            def run():
                with torch.no_grad(), autocast_of("cpu", name):
                    net(x)
            ms = time_ms(run, "cpu", warmup=2 if variant != "eager" else 1, reps=reps)
            table.add({"what": "encoder", "variant": variant, "precision": name, "shape": "4 frames 224px",
                       "mode": "infer", "median_ms": ms})
            print(table.rows[-1], flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also torch.compile the encoder (inference)")
    args = ap.parse_args()
    lim = machine_limits("cpu", gemm_shape(get_config("micronbert_s8"), 2), quick=args.reps < 2)
    table = Table("bench_cpu_route", "cpu", limit_notes(lim))
    op_rows(table, args.reps)
    encoder_rows(table, args.reps, args.compile)
    for line in fastest(table.rows):
        table.note(line)
    table.finish()


def fastest(rows) -> list:
    """One line per (what, precision): the fastest variant of this run, and by how much."""
    out = []
    key = lambda r: (r["what"], r["mode"], r["precision"])  # noqa: E731
    for k in dict.fromkeys(map(key, rows)):
        rs = sorted((r for r in rows if key(r) == k), key=lambda r: r["median_ms"])
        if len(rs) > 1:
            out.append(f"fastest {k[0]} {k[1]} in {k[2]} here: {rs[0]['variant']} "
                       f"({rs[1]['median_ms'] / rs[0]['median_ms']:.2f}x {rs[1]['variant']})")
    for what, mode in dict.fromkeys((r["what"], r["mode"]) for r in rows):
        best = {p: min(r["median_ms"] for r in rows if (r["what"], r["mode"], r["precision"]) == (what, mode, p))
                for p in ("fp32", "bf16")}
        out.append(f"{what} {mode}: best bf16 over best fp32 here {best['fp32'] / best['bf16']:.2f}x")
    return out


if __name__ == "__main__":
    main()
