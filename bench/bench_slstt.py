"""SLSTT (micronbert.slstt) beside μ-BERT and the baselines on the demo's synthetic data.

Per nuisance level: `micronbert synth --nuisance LEVEL` data (8 subjects x 5 classes x 3
clips, seed 0: the demo's labelled set), onset -> frame Farneback flow (timed, cached),
SLSTT (`slstt_tiny`) trained per LOSO fold exactly as `finetune` trains μ-BERT (30 epochs,
batch 32, lr 5e-4, flip 0 as `--dataset synthetic`), with the LSTM and the mean aggregator,
beside the pixel difference and Farneback flow + linear head on the same folds (patch grid
of micronbert_tiny, as the demo). μ-BERT's rows are read from the files the demo and
bench_evidence wrote (named in the table), not rerun here.

    python bench/bench_slstt.py                       # medium (the demo's level)
    python bench/bench_slstt.py --levels none low medium high
    python bench/bench_slstt.py --aggregators lstm & python bench/bench_slstt.py --aggregators mean; wait
    python bench/bench_slstt.py --aggregators     # the table from the runs' results in --work
    python bench/bench_slstt.py --epochs 100 --lr 2e-3 --layer-decay 1  # a from-scratch recipe beside

Writes bench/results/<device>/slstt/slstt.{csv,md} (LOSO) and slstt_fold.{csv,md} (the
first fold's wall and CPU time: SLSTT one fold on this CPU, target < 1 min; on a shared CPU
the CPU time of the one thread is what a quiet core's wall time would be; flow_s_all_clips:
what that run spent getting every clip's flow fields, under a second where the cache had them).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, device_name, write_table  # noqa: E402

import torch  # noqa: E402

from micronbert.augment import PairAugment  # noqa: E402
from micronbert.recognition.features import onset_apex_frames  # noqa: E402
from micronbert.recognition.folds import labelled, loso_splits  # noqa: E402
from micronbert.recognition.probe import feature_baselines  # noqa: E402
from micronbert.recognition.report import metrics  # noqa: E402
from micronbert.recognition.finetune import FinetuneConfig  # noqa: E402
from micronbert.slstt import get_slstt_config, slstt_predictions, table_flows  # noqa: E402

DEV = os.path.join(RESULTS, device_name("cpu"))
_D = FinetuneConfig()
DEFAULT_RECIPE = f"e{_D.epochs}-lr{_D.lr:g}-ld{_D.layer_decay:g}"  # finetune's, as μ-BERT is trained


def mubert_rows(level: str) -> list:
    """μ-BERT's LOSO rows of this level from the demo's and bench_evidence's files."""
    rows = []
    if level == "medium":
        for path, how in ((os.path.join(DEV, "demo", "results.json"), "μ-BERT probe (demo, 600 steps)"),
                          (os.path.join(DEV, "demo", "finetune", "loso.json"), "μ-BERT fine-tuned (demo)")):
            if os.path.exists(path):
                d = json.load(open(path))
                d = d.get("loso", d)
                rows.append((how, d["accuracy"], d["uf1"], d["uar"], os.path.relpath(path, RESULTS), None))
                u = d["baselines"]["untrained"]
                rows.append((how.replace("μ-BERT", "untrained μ-BERT").replace(", 600 steps", ""), u["accuracy"],
                             u["uf1"], u["uar"], os.path.relpath(path, RESULTS), None))
    ev = os.path.join(DEV, "evidence", "evidence.csv")
    if os.path.exists(ev):
        for r in csv.DictReader(open(ev)):
            if r["nuisance"] == level and r["method"] in ("model (DMA map)", "untrained model (same seed)"):
                name = "μ-BERT probe (evidence, 150 steps)" if r["method"].startswith("model") else "untrained μ-BERT probe (evidence)"
                rows.append((name, float(r["loso_accuracy"]), float(r["loso_uf1"]), float(r["loso_uar"]),
                             os.path.relpath(ev, RESULTS) + " (2 clips/class)", None))
    return rows


def slstt_loso(flows, y, splits, n, agg, cfg, args, level, t_flow) -> dict:
    """LOSO of slstt_tiny with ``agg``: metrics and the first fold's wall and CPU time."""
    sc = get_slstt_config("slstt_tiny", aggregator=agg)
    t0, c0 = time.perf_counter(), time.process_time()
    first = slstt_predictions(flows, y, splits[:1], n, sc, cfg, progress=False)
    t_fold, c_fold = time.perf_counter() - t0, time.process_time() - c0
    rest = slstt_predictions(flows, y, splits[1:], n, sc, cfg, progress=args.progress)
    m = metrics(y.numpy(), torch.where(first >= 0, first, rest).numpy(), n)
    print(f"[bench_slstt] {level} {agg}: UF1 {m['uf1']:.3f}, one fold {t_fold:.1f}s wall, {c_fold:.1f}s CPU",
          flush=True)
    fold = {"nuisance": level, "model": "slstt_tiny", "aggregator": agg, "train_clips": int(splits[0]["train"].sum()),
            "epochs": args.epochs, "threads": args.threads, "flow_s_all_clips": round(t_flow, 1),
            "one_fold_wall_s": round(t_fold, 1), "one_fold_cpu_s": round(c_fold, 1),
            "load_avg_1min": round(os.getloadavg()[0], 1)}
    return {**m, "one_fold_cpu_s": round(c_fold, 1), "fold": fold}


def run_level(level: str, args, fold_rows: list) -> list:
    from micronbert.data.annotations import load_annotations
    from micronbert.data.synthetic import write_synthetic_dataset
    data = os.path.join(args.work, f"synth-{level}")
    if not os.path.exists(os.path.join(data, "nuisance.json")) and not os.path.exists(os.path.join(data, "masks")):
        write_synthetic_dataset(data, n_subjects=8, clips_per_class=3, seed=0, nuisance=level)
    table = load_annotations("synthetic", data)
    classes = table.attrs["classes"]
    table, y, _ = labelled(table, classes)
    n = len(classes)
    splits, _ = loso_splits(table["subject"].values, y, n)
    scfg = get_slstt_config("slstt_tiny")
    t0 = time.perf_counter()
    flows = table_flows(table, scfg.img_size, scfg.frames, "farneback", os.path.join(args.work, "flow_cache"))
    t_flow = time.perf_counter() - t0
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, layer_decay=args.layer_decay, aug=PairAugment(flip=0.0))
    recipe = f"e{cfg.epochs}-lr{cfg.lr:g}-ld{cfg.layer_decay:g}"
    for agg in args.aggregators:
        part = os.path.join(args.work, f"slstt-{level}-{agg}-{recipe}.json")
        if not os.path.exists(part):
            json.dump({**slstt_loso(flows, y, splits, n, agg, cfg, args, level, t_flow), "recipe": recipe},
                      open(part, "w"))
    rows = []
    for part in sorted(glob.glob(os.path.join(args.work, f"slstt-{level}-*.json"))):  # every recipe run
        r = json.load(open(part))
        agg = r["fold"]["aggregator"]
        name = f"SLSTT slstt_tiny, {agg}" + ("" if r["recipe"] == DEFAULT_RECIPE else
                                              f" ({r['recipe']}: epochs, lr, layer decay)")
        rows.append((name, r["accuracy"], r["uf1"], r["uar"], "this run", r["one_fold_cpu_s"]))
        fold_rows.append({**r["fold"], "recipe": r["recipe"]})
    onset, apex = onset_apex_frames(table, 64)
    for name, p in feature_baselines(onset, apex, y, splits, n, 8).items():
        m = metrics(y.numpy(), p.numpy(), n)
        rows.append((name.replace("_", " ") + " + linear head", m["accuracy"], m["uf1"], m["uar"], "this run", None))
    rows += mubert_rows(level)
    return [{"nuisance": level, "method": r[0], "loso_accuracy": r[1], "loso_uf1": r[2], "loso_uar": r[3],
             "chance_uf1": 1.0 / n, "source": r[4], "one_fold_cpu_s": r[5]} for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", nargs="+", default=["medium"], choices=("none", "low", "medium", "high"))
    ap.add_argument("--work", default="/tmp/bench_slstt", help="synthetic data and flow cache")
    ap.add_argument("--epochs", type=int, default=FinetuneConfig().epochs)
    ap.add_argument("--lr", type=float, default=FinetuneConfig().lr)
    ap.add_argument("--layer-decay", type=float, default=FinetuneConfig().layer_decay)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--aggregators", nargs="*", default=["lstm", "mean"], choices=("lstm", "mean"),
                    help="which to train now (results kept per level, aggregator and recipe in --work: "
                         "two processes can run one each; every recipe run so far joins the table)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, fold_rows = [], []
    for level in args.levels:
        rows += run_level(level, args, fold_rows)
    os.makedirs(os.path.join(DEV, "slstt"), exist_ok=True)
    write_table("slstt/slstt", rows, "cpu")
    if fold_rows:
        write_table("slstt/slstt_fold", fold_rows, "cpu")


if __name__ == "__main__":
    main()
