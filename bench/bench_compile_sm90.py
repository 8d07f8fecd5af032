"""Registers, shared memory, spills and tensor-core instructions of every shipped Triton
kernel configuration, compiled for the H100 (sm_90) on any machine, no GPU needed.

    python bench/bench_compile_sm90.py                       # this Triton
    python bench/bench_compile_sm90.py --name triton-3.6.0   # another Triton's table (its venv:
        python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install torch==2.13.0 triton==3.6.0 numpy
        PYTHONPATH=$PWD /tmp/t36/bin/python bench/bench_compile_sm90.py --name triton-3.6.0)
    python bench/bench_compile_sm90.py --quick               # one head dim, one patch size (a smoke test)

Writes bench/results/sm_90-compiled-offline/<name>.{csv,md} (or $MICRONBERT_BENCH_OUT),
a row as each configuration is compiled.
"""
import argparse
import os
import sys
from dataclasses import asdict

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from micronbert.kernels import compile_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="bench_compile_sm90", help="table name (file stem)")
    ap.add_argument("--quick", action="store_true", help="head dim 64 in bf16 and patch 8 only")
    ap.add_argument("--note", action="append", default=[], help="a line for the table's header")
    args = ap.parse_args()
    common.device_name = lambda device: "sm_90-compiled-offline"  # a target, not a device
    table = common.Table(args.name, "cpu", notes=["target: sm_90 (H100), compiled offline; "
                                                  "shared_bytes = static + dynamic"] + args.note)
    from micronbert.kernels import dma_triton
    head_dims = sorted({hd for cfg in dma_triton.CONFIGS.values() for hd in cfg})
    dtypes, patches = (("bf16",), (8,)) if args.quick else (("fp16", "bf16"), (8, 16))
    groups = [lambda dt=dt, hd=hd: compile_report.compile_dma(90, dtypes=(dt,), head_dims=(hd,))
              for dt in dtypes for hd in ((64,) if args.quick else head_dims)]
    groups += [lambda p=p: compile_report.compile_swap(90, patch_sizes=(p,)) for p in patches]
    for group in groups:  # a few configurations at a time, each row written as it comes
        for r in group():
            table.add(dict(asdict(r), spills=r.spills))
    table.finish()


if __name__ == "__main__":
    main()
