"""bench/bench_spotting.py cannot rot: its --quick run writes the spotting table with every
set x method x p row, counts that add up to the set's own ground truth, F1 that follows from
the counts, and no file of an earlier run left beside it."""
import csv
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_spotting  # noqa: E402


def ground_truth(root):
    """{kind: count} of a set's sheet, read with the dataset loader (not the bench's numbers)."""
    from micronbert.data.long_videos import load_long_annotations
    table = load_long_annotations("synthetic_long", root)
    return {c: int((table["kind"] == c).sum()) for c in ("micro", "macro")}


def test_quick_run_writes_every_row_with_consistent_counts(tmp_path, monkeypatch):
    out, work = tmp_path / "res", tmp_path / "work"
    out.mkdir()
    for stale in ("score_999_1.png", "spot_f1.png", "spot_table.csv"):  # an earlier run's files
        (out / stale).write_text("stale")
    monkeypatch.setenv("MICRONBERT_BENCH_OUT", str(out))
    argv = ["--quick", "--work", str(work)]
    monkeypatch.setattr(sys, "argv", ["bench/bench_spotting.py"] + argv)
    bench_spotting.main(argv)

    with open(out / "spot_table.csv") as f:
        rows = list(csv.DictReader(f))
    methods = ["micronbert_tiny untrained", "micronbert_tiny pre-trained 2 steps", "mdmd_flow"]
    want = [(s, m, p) for s in ("medium", "control") for m in methods for p in ("default", "LOSO")]
    assert sorted((r["set"], r["method"], r["p"]) for r in rows) == sorted(want)
    gt = {s: ground_truth(str(work / s)) for s in ("medium", "control")}
    assert sum(n for g in gt.values() for n in g.values()) > 0  # the sums below are not 0 = 0
    for r in rows:
        for c in ("micro", "macro"):
            tp, fp, fn = (int(r[f"{c}_{k}"]) for k in ("tp", "fp", "fn"))
            assert tp + fn == gt[r["set"]][c], (r, c)
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            assert abs(float(r[f"{c}_f1"]) - f1) < 6e-4, (r, c)
        if r["p"] == "LOSO":  # a fitted p per held-out subject (001, 002)
            assert [x.split(":")[0] for x in r["p_value"].split()] == ["001", "002"], r

    md = (out / "spot_table.md").read_text()
    for line in ("- device: ", "- versions: ", "- command: `bench/bench_spotting.py --quick", "- date: ",
                 "- code: ", "ground truth"):
        assert line in md, line
    assert md.count("| medium |") == md.count("| control |") == 6
    assert sorted(os.listdir(out)) == ["score_002_1.png", "spot_f1.png", "spot_results.json",
                                       "spot_table.csv", "spot_table.md"]
    assert (out / "spot_f1.png").read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "spot_results.json").read_text())["results"]
    assert {s: res[s]["facts"]["ground_truth"] for s in gt} == gt
