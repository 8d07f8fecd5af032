"""SLSTT (micronbert.slstt) beside μ-BERT and the baselines on the demo's synthetic data,
every row measured by this script on the same LOSO folds.

Per nuisance level, in one process (one torch thread by default: the CPU is shared):
1. the demo's sets (`micronbert demo`'s own steps): the labelled set (8 subjects x 5 classes
   x 3 clips, seed 0) and an unlabelled corpus of other faces (--corpus-faces x --corpus-clips);
2. μ-BERT (micronbert_tiny) pre-trained as the demo does (its 2 held-out subjects excluded)
   for --steps steps: a small budget, stated in the table (the demo's is 600 steps, 48 x 8);
3. `micronbert evaluate --checkpoint <it> --baselines default,slstt --aggregator lstm`: the
   μ-BERT linear probe, pixel difference, Farneback flow and untrained μ-BERT (linear heads)
   and SLSTT slstt_tiny with the LSTM, trained per fold as `finetune` trains (30 epochs);
4. the same with `--baselines slstt --aggregator mean` (same folds, cached flow);
5. with --finetune: `micronbert finetune --checkpoint <it> --baselines none` (μ-BERT fine-tuned);
6. SLSTT's first fold again, timed (wall and CPU; target < 1 min on this CPU).

    python bench/bench_slstt.py                                   # medium (the demo's level)
    python bench/bench_slstt.py --levels none low medium high     # the full table
    python bench/bench_slstt.py --levels medium --finetune        # with μ-BERT fine-tuned

Writes bench/results/<device>/slstt/slstt.{csv,md} (LOSO, a row per level and method, as
they are measured) and slstt_fold.{csv,md} (one fold's time; on a shared CPU the CPU time of
the one thread is what a quiet core's wall time would be). Runs go to --work/<level>/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Table, results_folder  # noqa: E402

import torch  # noqa: E402

from micronbert.cli import main as micronbert  # noqa: E402
from micronbert.recognition.finetune import FinetuneConfig  # noqa: E402

LEVELS = ("none", "low", "medium", "high")


def pretrained(level: str, args) -> tuple:
    """The demo's labelled set and μ-BERT pre-trained on the demo's clips (held-out subjects
    excluded) for ``args.steps`` steps: (data folder, checkpoint, pre-training seconds)."""
    from micronbert.cli.demo import _pretrain, synthesise
    out = os.path.join(args.work, level)
    data, run = os.path.join(out, "data"), os.path.join(out, f"pretrain-{args.steps}-{args.corpus_faces}x"
                                                           f"{args.corpus_clips}")
    ckpt = os.path.join(run, "pretrain", "last.pt")
    if os.path.exists(ckpt):  # this script's own checkpoint of an earlier run (same budget)
        return data, ckpt, None
    ns = SimpleNamespace(out=run, subjects=8, clips_per_class=3, held_out=2, corpus_faces=args.corpus_faces,
                         corpus_clips=args.corpus_clips, nuisance=level, seed=0, model="micronbert_tiny",
                         overrides=None, backend="auto", steps=args.steps, batch=32, lr=2e-3)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    _pretrain(ns, synthesise(ns, data)[2])
    return data, ckpt, round(time.perf_counter() - t0, 1)


def loso_run(cmd: str, data: str, ckpt: str, out: str, *flags) -> dict:
    """``micronbert <cmd>`` on the level's data from the checkpoint: loso.json's dict."""
    line = [cmd, "--data", data, "--dataset", "synthetic", "--checkpoint", ckpt, "--out", out, *flags]
    print("[bench_slstt] micronbert " + " ".join(line), flush=True)
    if micronbert(line) != 0:
        raise RuntimeError(f"micronbert {' '.join(line)} failed")
    return json.load(open(os.path.join(out, "loso.json")))


def row(level, method, m, n_classes, source, note=""):
    return {"nuisance": level, "method": method, "loso_accuracy": round(m["accuracy"], 4),
            "loso_uf1": round(m["uf1"], 4), "loso_uar": round(m["uar"], 4), "chance_uf1": 1.0 / n_classes,
            "source": source, "note": note}


def one_fold(level, data, agg, flow_cache, args) -> dict:
    """SLSTT's first LOSO fold, timed (its flow read from the cache the runs filled)."""
    from micronbert.augment import PairAugment
    from micronbert.data.annotations import load_annotations
    from micronbert.recognition.folds import labelled, loso_splits
    from micronbert.slstt import get_slstt_config, slstt_predictions, table_flows
    table = load_annotations("synthetic", data)
    table, y, _ = labelled(table, table.attrs["classes"])
    splits, _ = loso_splits(table["subject"].values, y, len(table.attrs["classes"]))
    scfg = get_slstt_config("slstt_tiny", aggregator=agg)
    t0 = time.perf_counter()
    flows = table_flows(table, scfg.img_size, scfg.frames, "farneback", flow_cache, progress=False)
    t_flow = time.perf_counter() - t0
    cfg = FinetuneConfig(aug=PairAugment(flip=0.0))
    t0, c0 = time.perf_counter(), time.process_time()
    slstt_predictions(flows, y, splits[:1], len(table.attrs["classes"]), scfg, cfg, progress=False)
    return {"nuisance": level, "model": "slstt_tiny", "aggregator": agg, "train_clips": int(splits[0]["train"].sum()),
            "epochs": cfg.epochs, "threads": args.threads, "flow_read_s_all_clips": round(t_flow, 1),
            "one_fold_wall_s": round(time.perf_counter() - t0, 1),
            "one_fold_cpu_s": round(time.process_time() - c0, 1), "load_avg_1min": round(os.getloadavg()[0], 1)}


def run_level(level: str, args, table: Table, folds: Table) -> None:
    data, ckpt, t_pre = pretrained(level, args)
    out, cache = os.path.join(args.work, level), os.path.join(args.work, level, "flow_cache")
    pre = f"{args.steps} steps, {args.corpus_faces} x {args.corpus_clips} corpus" + (
        f", {t_pre:.0f} s" if t_pre else ", checkpoint of an earlier run")
    lstm = loso_run("evaluate", data, ckpt, os.path.join(out, "eval-lstm"), "--baselines", "default,slstt",
                    "--aggregator", "lstm", "--flow-cache", cache)
    mean = loso_run("evaluate", data, ckpt, os.path.join(out, "eval-mean"), "--baselines", "slstt",
                    "--aggregator", "mean", "--flow-cache", cache)
    assert mean["model"]["per_fold"] == lstm["model"]["per_fold"], "the probe differs between the two runs"
    n, b = lstm["n_classes"], lstm["baselines"]
    src = f"{level}/eval-lstm/loso.json"
    table.add(row(level, "SLSTT slstt_tiny, lstm", b["slstt"], n, src, "30 epochs per fold from scratch"))
    table.add(row(level, "SLSTT slstt_tiny, mean", mean["baselines"]["slstt"], n, f"{level}/eval-mean/loso.json",
                  "30 epochs per fold from scratch"))
    table.add(row(level, "μ-BERT micronbert_tiny, linear probe", lstm, n, src, pre))
    if args.finetune:
        ft = loso_run("finetune", data, ckpt, os.path.join(out, "finetune"), "--baselines", "none")
        table.add(row(level, "μ-BERT micronbert_tiny, fine-tuned", ft, n, f"{level}/finetune/loso.json",
                      f"{pre}; 30 epochs per fold"))
    else:
        table.note(f"{level}: μ-BERT fine-tuned not run (--finetune)")
    table.add(row(level, "optical flow + linear head", b["optical_flow"], n, src, "Farneback onset -> apex"))
    table.add(row(level, "pixel difference + linear head", b["pixel_difference"], n, src, ""))
    table.add(row(level, "untrained μ-BERT, linear probe", b["untrained"], n, src, "same config and seed"))
    for agg in ("lstm", "mean"):
        folds.add(one_fold(level, data, agg, cache, args))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", nargs="+", default=["medium"], choices=LEVELS)
    ap.add_argument("--work", default="/tmp/bench_slstt", help="data, checkpoints and the runs")
    ap.add_argument("--steps", type=int, default=150, help="μ-BERT pre-training steps (batch 32)")
    ap.add_argument("--corpus-faces", type=int, default=16, help="faces of the unlabelled corpus")
    ap.add_argument("--corpus-clips", type=int, default=4, help="unlabelled clips per corpus face")
    ap.add_argument("--finetune", action="store_true", help="also fine-tune μ-BERT per fold (slower)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(results_folder("cpu"), "slstt"), exist_ok=True)
    notes = [f"LOSO over the 8 subjects of each level's set (120 clips, 5 classes); every row measured by "
             f"this run on the same folds; μ-BERT pre-trained {args.steps} steps (demo: 600)"]
    table, folds = Table("slstt/slstt", "cpu", notes), Table("slstt/slstt_fold", "cpu")
    for level in args.levels:
        run_level(level, args, table, folds)


if __name__ == "__main__":
    main()
