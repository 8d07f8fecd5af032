"""Every shipped Triton kernel configuration compiles for the H100 (sm_90) on this
CPU-only machine, uses Hopper's warpgroup tensor-core instructions where it multiplies
matrices, and spills nothing (no local memory, no stack)."""
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os
os.environ.pop("TRITON_INTERPRET", None)
from dataclasses import asdict
from micronbert.kernels import compile_report as c
print(json.dumps([dict(asdict(r), spills=r.spills) for r in c.compile_all(90)]))
"""


@pytest.fixture(scope="module")
def reports():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_configuration_compiled(reports):
    from micronbert.kernels import compile_report, dma_triton
    variants = compile_report.dma_variants()  # the forward with and without E, the backward
    n_dma = sum(len(dma_triton.CONFIGS[key]) for _, key, _, _ in variants) * 2  # fp16 and bf16
    assert sum(r["kernel"].startswith("_dma") for r in reports) == n_dma
    assert {r["kernel"] for r in reports if r["kernel"].startswith("_dma")} == {v[0] for v in variants}
    assert {r["dtype"] for r in reports if r["kernel"].startswith("_dma")} == {"fp16", "bf16"}
    assert any(r["kernel"] == "_swap_fwd" for r in reports)


def test_dma_uses_hopper_tensor_cores(reports):
    """Every DMA kernel that multiplies matrices (dot_work non-empty) uses HGMMA."""
    from micronbert.kernels import compile_report, dma_triton
    multiplies = set()
    for name, key, _, extra in compile_report.dma_variants():
        plan = dma_triton.launch_plan(key, 1, 1, 128, 64)
        if dma_triton.dot_work(key, plan, 128, extra.get("SAVE_E", True)):
            multiplies.add(name)
    assert {"_dma_fwd", "_dma_fwd[E]", "_dma_bwd_dk"} <= multiplies
    for r in reports:
        if r["kernel"] in multiplies:
            assert r["hgmma"] > 0, r


def test_nothing_spills(reports):
    bad = [r for r in reports if r["spills"]]
    assert not bad, bad
    for r in reports:
        print(f"{r['kernel']:12s} {r['dtype']:10s} d={r['head_dim']:3d} regs={r['registers']:3d} "
              f"shared={r['shared_bytes']}")
