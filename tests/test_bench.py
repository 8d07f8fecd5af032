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
