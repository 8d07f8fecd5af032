"""bench/bench_memory.py, the script behind docs/method.md's memory table: its smoke run
measures a real peak in a fresh process, and its fit recovers the constants it fits."""
import csv
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_memory  # noqa: E402

from micronbert import create_model, memory  # noqa: E402


def test_quick_measures_a_step_in_a_fresh_process(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRONBERT_BENCH_OUT", str(tmp_path))
    bench_memory.main(["--quick"])
    with open(tmp_path / "memory_quick.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["config"], r["batch"], r["backend"]) for r in rows] == [("micronbert_tiny", "8", "auto")]
    r = rows[0]
    assert r["precision"].endswith("(auto)")
    measured, first, est = (float(r[k]) for k in ("measured_mib", "after_step1_mib", "estimate_mib"))
    # the peak holds at least the weights, their gradients and AdamW's moments (counted from
    # before the model is built), and it never goes down from the first step to the last
    params = memory.parameter_bytes(create_model("micronbert_tiny")) / 2 ** 20
    assert measured >= first > params * 0.9 and measured > 0
    assert math.isfinite(float(r["ratio"])) and float(r["ratio"]) == pytest.approx(est / measured, rel=1e-3)
    e = memory.activation_elem_bytes("cpu", r["precision"].split()[0])  # as the pretrain guard
    assert int(r["elem_bytes"]) == e
    assert est == pytest.approx(memory.estimate_training_bytes(create_model("micronbert_tiny"), 8, e) / 2 ** 20)
    assert "| micronbert_tiny | 8 | auto |" in (tmp_path / "memory_quick.md").read_text()


def test_fit_recovers_the_constants_it_fits():
    runtime, pix = 150 * 2 ** 20, 41.5
    rows = [{"pixel": p, "other": o, "measured": runtime + o + pix * p}
            for p, o in ((1e5, 3e7), (4e5, 9e7), (8e5, 2e8), (2e6, 1e9))]
    got = bench_memory.fit(rows)
    assert got == pytest.approx((runtime, pix), rel=1e-9)
    with pytest.raises(ValueError, match="two different"):
        bench_memory.fit(rows[:1])
    with pytest.raises(ValueError, match="two different"):
        bench_memory.fit([rows[0], dict(rows[0], measured=0)])


def test_components_add_up_to_the_estimate():
    """The fit's split of an estimate gives the estimate back under the current constants."""
    c = bench_memory.components("micronbert_tiny", 32, "reference", 4)
    assert c["estimate"] == memory.estimate_training_bytes(create_model("micronbert_tiny", backend="reference"), 32)
    assert c["other"] + memory.RUNTIME_BYTES + memory.PIXEL_ELEMS * c["pixel"] == pytest.approx(c["estimate"], abs=1)


def test_guard_elem_bytes():
    """fp32 activations take 4 bytes; bf16 ones 2 on CUDA, more on a CPU (its autocast keeps
    fp32 copies: measured by bench_memory), and the guard's estimate follows them."""
    assert memory.activation_elem_bytes("cuda", "bf16") == 2
    assert memory.activation_elem_bytes("cuda", "fp32") == memory.activation_elem_bytes("cpu", "fp32") == 4
    assert 2 < memory.activation_elem_bytes("cpu", "bf16") <= 4
    m = create_model("micronbert_tiny")
    est = {p: memory.estimate_training_bytes(m, 32, memory.activation_elem_bytes("cpu", p)) for p in ("fp32", "bf16")}
    assert est["bf16"] <= est["fp32"]
    assert memory.estimate_training_bytes(m, 32, memory.activation_elem_bytes("cuda", "bf16")) < est["bf16"]
