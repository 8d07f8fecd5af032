"""DMA throughput: the authors' eager route, our reference, the chunked torch path,
a library route (SDPA's log-sum-exp; xformers where importable), and the fused kernels.

    python bench/bench_dma.py            # the issue's shapes (on a GPU)
    python bench/bench_dma.py --quick    # small shapes, for a CPU machine (its default)
    python bench/bench_dma.py --tiny     # one tiny shape, one repeat (bench/gpu.sh --cpu-check)

Modes: infer (forward under no_grad: the fused path skips E), fwd (the training forward, inputs
requiring grad: the fused path also saves E = k - P k), bwd, fwd+bwd. Median ms, TFLOP/s
(2*B*H*N^2*d counted for the forward, 2x that for the backward), frac_gemm = that over the
machine's own GEMM rate in the same dtype, measured in the same run at micronbert_s8's MLP
shape (common.machine_limits; on a GPU also mfu_spec, over the spec sheet's bf16 peak, an
assumption), peak extra memory (CUDA). Each row is written as it is measured.
The roofline shapes (roofline.ROOFLINE_SHAPES) are among the GPU shapes, so that
bench_roofline.py --measured puts these medians beside its predictions. Writes bench/results/<device>/bench_dma.{csv,md,png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import (Table, fraction, gemm_shape, limit_notes, line_plot, machine_limits,  # noqa: E402
                    peak_mb, spec_fraction, time_ms)
from micronbert import get_config  # noqa: E402
from micronbert.kernels import diagonal_micro_attention, triton_unavailable_reason  # noqa: E402
from micronbert.kernels.roofline import ROOFLINE_SHAPES  # noqa: E402

AUTHORS = [(16, 1, 784, 512), (64, 1, 784, 512), (256, 1, 784, 512)]
VIT = [(8, 6, n, 64) for n in (197, 785, 3137)] + [s for s in ROOFLINE_SHAPES if s[3] == 64]
QUICK = [(2, 1, 784, 512), (1, 6, 197, 64), (1, 12, 785, 64)]
TINY = [(1, 2, 37, 16)]


def eager_authors(q, k, v):
    """Their CrossAttention(diag_att=True): full attention, softmax, then the diagonal."""
    attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return torch.diagonal(attn, dim1=-2, dim2=-1).unsqueeze(-1) * v


def sdpa_lse(q, k, v):
    """Library route: an attention kernel that returns the log-sum-exp; D from it."""
    if q.is_cuda:
        out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)
        lse = out[1][..., : q.shape[2]]
    else:
        lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[1]
    s_ii = (q.float() * k.float()).sum(-1) * q.shape[-1] ** -0.5
    return (torch.exp(s_ii - lse.float()).unsqueeze(-1) * v.float()).to(q.dtype)


def providers(device):
    p = {"authors_eager": eager_authors,
         "reference": lambda q, k, v: diagonal_micro_attention(q, k, v, backend="reference"),
         "torch_chunked": lambda q, k, v: diagonal_micro_attention(q, k, v, backend="torch"),
         "library_sdpa_lse": sdpa_lse}
    try:
        import xformers.ops as xops  # noqa: F401
        if device == "cuda":
            def xf(q, k, v):
                _, lse = xops.memory_efficient_attention_forward_requires_grad(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
                s_ii = (q.float() * k.float()).sum(-1) * q.shape[-1] ** -0.5
                return (torch.exp(s_ii - lse[..., : q.shape[2]].float()).unsqueeze(-1) * v).to(q.dtype)
            p["library_xformers"] = xf
    except Exception:
        pass
    if device == "cuda" and triton_unavailable_reason(torch.empty(1, device="cuda")) is None:
        p["fused_triton"] = lambda q, k, v: diagonal_micro_attention(q, k, v, backend="triton")
    return p


def run_fn(fn, q, k, v, mode):
    """The timed call of one mode: infer (no_grad), fwd, bwd (through a saved graph), fwd+bwd."""
    if mode == "infer":
        def run():
            with torch.no_grad():
                return fn(q, k, v)
        return run
    if mode == "fwd":
        return lambda: fn(q, k, v)
    o = fn(q, k, v)
    go = torch.randn_like(o)
    if mode == "bwd":
        return lambda: torch.autograd.grad(o, (q, k, v), go, retain_graph=True)
    return lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), go)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (CPU)")
    ap.add_argument("--tiny", action="store_true", help="one tiny shape, one repeat (a smoke test)")
    ap.add_argument("--dtype", default=None, help="bf16 (GPU default) or fp32 (CPU default)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device == "cuda" else "fp32")]
    dname = str(dtype).replace("torch.", "")
    precision = {"float32": "fp32", "bfloat16": "bf16"}.get(dname)
    shapes = TINY if args.tiny else QUICK if (args.quick or device == "cpu") else AUTHORS + VIT
    model, batch = ("micronbert_tiny", 1) if args.tiny else ("micronbert_s8", 64 if device == "cuda" else 2)
    lim = machine_limits(device, gemm_shape(get_config(model), batch), quick=args.tiny)
    table = Table("bench_dma", device, limit_notes(lim) + [f"frac_gemm: over the {model} B={batch} GEMM rate"])
    reps = 1 if args.tiny else 5
    for (b, h, n, d) in shapes:
        flops = 2 * b * h * n * n * d
        for name, fn in providers(device).items():
            q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype, requires_grad=True)
                       for _ in range(3))
            for mode in ("infer", "fwd", "bwd", "fwd+bwd"):
                if name.startswith("library") and mode not in ("infer", "fwd"):
                    continue  # their backward does not take a gradient through the lse
                row = {"provider": name, "B": b, "H": h, "N": n, "d": d, "mode": mode, "dtype": dname}
                try:
                    run = run_fn(fn, q, k, v, mode)
                    ms = time_ms(run, device, warmup=1 if args.tiny else 2, reps=reps)
                    tflops = flops * {"infer": 1, "fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode] / ms / 1e9
                    row.update(median_ms=ms, tflops=tflops, frac_gemm=fraction(tflops, lim, precision),
                               mfu_spec=spec_fraction(tflops, lim), peak_mb=peak_mb(run, device))
                except Exception as e:  # e.g. out of memory: reported, not hidden
                    row.update(median_ms=None, tflops=None, frac_gemm=None, mfu_spec=None,
                               peak_mb=f"error: {type(e).__name__}")
                table.add(row)
                print(row, flush=True)
    rows = table.rows

    def plot(path):
        labels = sorted({f"B{r['B']} H{r['H']} N{r['N']} d{r['d']}" for r in rows})
        series = {}
        for prov in sorted({r["provider"] for r in rows}):
            ms = {f"B{r['B']} H{r['H']} N{r['N']} d{r['d']}": r["median_ms"] for r in rows
                  if r["provider"] == prov and r["mode"] == "fwd"}
            series[prov] = (labels, [ms.get(lab) or float("nan") for lab in labels])
        line_plot(path, series, "shape", "forward median ms", rotate=20)

    table.finish(plot)


if __name__ == "__main__":
    main()
