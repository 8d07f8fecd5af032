"""The benchmark scripts call the model the way it calls its ops: bench_train swaps in the
authors' swap for the model's fused one, so its signature must follow the model's call
(bench/gpu.sh's training table depends on it, and no other test runs it)."""
import os
import sys

import torch

import micronbert.model as M
from micronbert import create_model
from micronbert.kernels import random_swap_mask

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_train  # noqa: E402


def test_bench_train_authors_swap_is_the_models_swap(monkeypatch, seed):
    model = create_model("micronbert_tiny", backend="reference")
    c = model.config
    g = torch.Generator().manual_seed(seed)
    h, w = c.img_size
    x = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=g)
    mask = random_swap_mask(3, (h // c.patch_size, w // c.patch_size), 0.5, generator=g)
    ours = model.swap_patches(x, y, mask)
    monkeypatch.setattr(M, "blockwise_swap_patches", bench_train.authors_swap)
    theirs = model.swap_patches(x, y, mask)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-5, atol=1e-5)


def test_table_writes_each_row_as_it_comes(tmp_path, monkeypatch):
    """A bench stopped by a time limit keeps the rows it measured: each add() is on disk."""
    import csv

    import common
    monkeypatch.setenv("MICRONBERT_BENCH_OUT", str(tmp_path))
    (tmp_path / "t.csv").write_text("stale,row\n1,2\n")
    table = common.Table("t", "cpu", notes=["a note"])
    assert not (tmp_path / "t.csv").exists()  # an earlier run's rows are not mixed in
    for i in range(3):
        table.add({"route": f"r{i}", "ms": float(i)})
        with open(tmp_path / "t.csv") as f:
            assert [r["route"] for r in csv.DictReader(f)] == [f"r{j}" for j in range(i + 1)]
        md = (tmp_path / "t.md").read_text()
        assert f"| r{i} | {float(i):.4g} |" in md and "- a note" in md
    try:
        table.add({"other": 1})
        raise AssertionError("a row with other columns was accepted")
    except ValueError as e:
        assert "differ" in str(e)


def test_machine_limits_measure_the_models_gemm():
    """The limit is the GEMM at the model's MLP shape (tokens of both frames x dim x 4 dim),
    measured in fp32 and bf16 on the CPU; no spec-sheet figure is claimed for a CPU."""
    import common
    from micronbert import get_config
    assert common.gemm_shape(get_config("micronbert_s8"), 2) == (2 * 2 * 784, 512, 2048)
    lim = common.machine_limits("cpu", (64, 32, 128), quick=True)
    assert lim["fp32"] > 0 and lim["bf16"] > 0 and lim["copy_gbps"] > 0 and lim["spec"] is None
    notes = "\n".join(common.limit_notes(lim))
    assert "64x32x128" in notes and "spec-sheet" not in notes
    assert common.fraction(lim["bf16"] / 2, lim, "bf16") == 0.5 and common.fraction(1.0, lim, "fp16") is None


def test_step_gemms_records_every_gemm_of_the_step():
    """bench_step_gemms sees every GEMM of a training step, forward and backward: their
    FLOPs, each counted alone on fresh operands of the recorded shape and strides, add up
    to the step's (FlopCounterMode on the reference route), in fp32 (SDPA) and in bf16."""
    from contextlib import nullcontext

    import bench_step_gemms as G
    for precision in ("fp32", "bf16"):
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        step = bench_train.make_step("fused", "micronbert_tiny", 3, "cpu", amp)
        rec = G.GemmRecorder()
        with rec:
            step()
        ops = {f.__name__.split(".")[0] for f, _, _, _ in rec.calls}
        assert {"mm", "addmm", "bmm"} <= ops, ops
        total = sum(G.alone(f, specs, "cpu", 1, kw)[1] for f, specs, kw, _ in rec.calls)
        want = bench_train.model_flops("micronbert_tiny", 3, "cpu")
        assert abs(total / want - 1) < 0.02, (precision, total, want)


def test_step_gemms_names_each_operands_layout():
    import bench_step_gemms as G
    a, b = torch.randn(5, 7), torch.randn(5, 3)
    rec = G.GemmRecorder()
    with rec:
        a.t() @ b
        b.t() @ a
        torch.bmm(torch.randn(2, 4, 6), torch.randn(2, 3, 6).transpose(1, 2))
    assert [G.layout(s) for _, s, _, _ in rec.calls] == ["TN", "TN", "NT"]
    assert G.label(*rec.calls[0][:2]) == "mm [7,5] x [5,3]"
    sec, flop = G.alone(*rec.calls[2][:2], "cpu", reps=1)
    assert flop == 2 * 2 * 4 * 6 * 3 and sec > 0
    # a broadcast operand (stride 0) and keyword arguments are rebuilt as recorded
    with rec:
        torch.addmm(torch.zeros(3).expand(7, 3), a.t(), b, beta=0.5)
    f, specs, kw, _ = rec.calls[-1]
    assert specs[0][2] == (0, 1) and kw == {"beta": 0.5}
    assert G.alone(f, specs, "cpu", 1, kw)[1] == 2 * 7 * 5 * 3
