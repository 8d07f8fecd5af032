"""bench/bench_evidence.py --study cannot rot: its tiny budget writes a row per ablation and
budget (budget 0 the untrained model, fine-tuned for the paper's config), map_gap follows
from the map and its control, and a rerun takes every cell from study.jsonl (no cell
measured twice, no set synthesised again)."""
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_evidence  # noqa: E402
import evidence_study  # noqa: E402


def test_tiny_study_writes_every_cell_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRONBERT_BENCH_OUT", str(tmp_path / "res"))
    argv = ["--study", "--budget", "tiny", "--work", str(tmp_path / "work")]
    monkeypatch.setattr(sys, "argv", ["bench/bench_evidence.py"] + argv)
    rows = bench_evidence.main(argv)
    b = evidence_study.STUDY_BUDGETS["tiny"]
    assert [(r["ablation"], r["steps"]) for r in rows] == [(a, s) for a in b["ablations"] for s in b["steps"]]
    for r in rows:
        assert abs(r["map_gap"] - (r["map_auc"] - r["map_control"])) < 1e-12
        assert 0 <= r["map_auc"] <= 1 and 0 <= r["probe_uf1"] <= 1
    ft = {(r["ablation"], r["steps"]) for r in rows if r.get("finetune_uf1") is not None}
    assert ("paper", 0) in ft and ("paper", b["steps"][-1]) in ft
    with open(tmp_path / "res" / "study.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert (tmp_path / "res" / "study.png").exists() and (tmp_path / "res" / "study_baselines.md").exists()

    def refuse(*a, **k):
        raise AssertionError("a rerun measured or synthesised again")
    monkeypatch.setattr(evidence_study, "prepare", refuse)
    monkeypatch.setattr(evidence_study, "pretrained", refuse)
    assert bench_evidence.main(argv) == rows
