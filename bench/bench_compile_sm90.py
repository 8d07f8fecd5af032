"""Registers, shared memory, spills and tensor-core instructions of every shipped Triton
kernel configuration, compiled for the H100 (sm_90) on any machine, no GPU needed.

    python bench/bench_compile_sm90.py

Writes bench/results/sm_90-compiled-offline/bench_compile_sm90.{csv,md}.
"""
import os
import sys
from dataclasses import asdict

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from micronbert.kernels import compile_report  # noqa: E402

rows = [dict(asdict(r), spills=r.spills) for r in compile_report.compile_all(90)]
common.device_name = lambda device: "sm_90-compiled-offline"  # a target, not a device
common.write_table("bench_compile_sm90", rows, "cpu")
