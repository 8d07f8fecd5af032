"""Roofline of the DMA routes on an H100, no GPU needed (kernels/roofline.py): for each
shape and route (fused, fused before issue 16, the authors' eager, SDPA with its lse) and mode
(infer, fwd, bwd, fwd+bwd), executed vs essential tensor-core work, HBM bytes and the predicted
time, per kernel and in total; with a GPU run of bench_dma, the measured time beside it.

    python bench/bench_roofline.py                                # the model alone
    python bench/bench_roofline.py --measured OUT/bench_dma.csv   # + measured (bench/gpu.sh)

Writes bench/results/sm_90-compiled-offline/roofline.{csv,md,png} (or $MICRONBERT_BENCH_OUT).
"""
import argparse
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from micronbert.kernels import roofline as cr  # noqa: E402


def summary(rows) -> str:
    """fwd+bwd per shape: recompute before/after, predicted ms of each route, speedups."""
    tot = {(r["B"], r["H"], r["N"], r["d"], r["route"], r["mode"]): r for r in rows if r["kernel"] == "total"}
    lines = ["| shape | recompute before | recompute after | fused ms | before ms | eager ms | "
             "essential ms | fused vs eager | fused / essential | measured fused ms | measured eager ms |",
             "|" + "---|" * 11]
    for b, h, n, d in sorted({k[:4] for k in tot}, key=lambda s: (-s[3], s[2])):
        get = lambda route: tot[(b, h, n, d, route, "fwd+bwd")]  # noqa: E731
        f, bf, e = get("fused"), get("fused_before"), get("authors_eager")
        na = lambda v: "n/a" if v is None else v  # noqa: E731
        lines.append(f"| B{b} H{h} N{n} d{d} | {bf['recompute']} | {f['recompute']} | {f['predicted_ms']} | "
                     f"{bf['predicted_ms']} | {e['predicted_ms']} | {f['essential_ms']} | "
                     f"{f['speedup_vs_eager']}x | {f['vs_essential']} | {na(f['measured_ms'])} | "
                     f"{na(e['measured_ms'])} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measured", help="bench_dma.csv of a GPU run: its medians go beside the model")
    args = ap.parse_args()
    measured = None
    if args.measured:
        if not os.path.exists(args.measured):
            sys.exit(f"--measured {args.measured}: no such file (run bench/bench_dma.py on a GPU first)")
        measured = cr.read_measured(args.measured)
    rows = cr.roofline(measured=measured)
    if not os.environ.get("MICRONBERT_BENCH_OUT"):
        common.device_name = lambda device: "sm_90-compiled-offline"  # a target, not a device

    def plot(path):
        shapes = sorted({(r["B"], r["H"], r["N"], r["d"]) for r in rows}, key=lambda s: (-s[3], s[2]))
        labels = [f"B{b} H{h} N{n} d{d}" for b, h, n, d in shapes]
        pred = {(r["B"], r["H"], r["N"], r["d"], r["route"]): r["predicted_ms"] for r in rows
                if r["kernel"] == "total" and r["mode"] == "fwd+bwd"}
        series = {route: (labels, [pred[s + (route,)] for s in shapes])
                  for route in ("fused", "fused_before", "authors_eager")}
        meas = {(r["B"], r["H"], r["N"], r["d"]): r["measured_ms"] for r in rows
                if r["kernel"] == "total" and r["mode"] == "fwd+bwd" and r["route"] == "fused"}
        if any(v is not None for v in meas.values()):
            series["fused (measured)"] = (labels, [meas[s] if meas[s] is not None else float("nan")
                                                   for s in shapes])
        common.line_plot(path, series, "shape", "fwd+bwd predicted ms (H100 roofline)")

    folder = common.write_table("roofline", rows, "cpu", plot)
    extra = "\n## fwd+bwd summary\n\n" + summary(rows) + "\n\n" + cr.ROOFLINE_NOTES
    with open(os.path.join(folder, "roofline.md"), "a") as f:
        f.write(extra)
    print(extra)


if __name__ == "__main__":
    main()
