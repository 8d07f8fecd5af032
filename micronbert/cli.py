"""The ``micronbert`` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def roc_auc(scores, labels) -> float:
    """ROC-AUC by the rank statistic (ties averaged)."""
    import numpy as np
    from scipy.stats import rankdata
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    npos, nneg = y.sum(), (~y).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def demo(args) -> dict:
    """Synthesise micro-motion pairs from real faces, pre-train micronbert_tiny on the CPU,
    and write micro-motion maps (before and after), the loss curve and results.json."""
    import torch

    from . import create_model, save_checkpoint
    from .data import normalize, synthetic_pairs
    from .train import pretrain
    from .viz import save_curves, save_motion_maps

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = create_model("micronbert_tiny")
    size = model.config.img_size[0]
    print(f"[demo] synthesising {args.pairs} training and {args.eval_pairs} held-out pairs "
          f"({size} px) from scikit-image faces", flush=True)
    tr_t, tr_n, _, _ = synthetic_pairs(args.pairs, size, seed=args.seed)
    ev_t, ev_n, ev_m, _ = synthetic_pairs(args.eval_pairs, size, seed=args.seed + 1)

    def evaluate():
        model.eval()
        maps = model.micro_motion_map(normalize(ev_t), normalize(ev_n))
        return maps, roc_auc(maps.numpy(), ev_m.numpy())

    maps0, auc0 = evaluate()
    g = torch.Generator().manual_seed(args.seed)

    def batches(step):
        idx = torch.randint(len(tr_t), (args.batch,), generator=g)
        return normalize(tr_t[idx]), normalize(tr_n[idx])

    t0 = time.time()
    records = pretrain(model, batches, args.steps, lr=args.lr, warmup=max(1, args.steps // 20),
                       log_path=os.path.join(args.out, "train_log.jsonl"),
                       generator=torch.Generator().manual_seed(args.seed + 2))
    train_s = time.time() - t0
    maps1, auc1 = evaluate()
    k = min(6, len(ev_t))
    save_motion_maps(os.path.join(args.out, "motion_maps_untrained.png"), ev_t[:k], ev_n[:k],
                     maps0[:k], ev_m[:k], title=f"untrained: map AUC {auc0:.3f}")
    save_motion_maps(os.path.join(args.out, "motion_maps.png"), ev_t[:k], ev_n[:k], maps1[:k],
                     ev_m[:k], title=f"after {args.steps} steps: map AUC {auc1:.3f}")
    save_curves(os.path.join(args.out, "loss.png"), records)
    save_checkpoint(os.path.join(args.out, "model.pt"), model, step=args.steps)
    first = sum(r["rec_loss"] for r in records[:10]) / max(1, len(records[:10]))
    last = sum(r["rec_loss"] for r in records[-10:]) / max(1, len(records[-10:]))
    res = {"model": "micronbert_tiny", "steps": args.steps, "batch": args.batch,
           "train_seconds": round(train_s, 1), "rec_loss_first10": first, "rec_loss_last10": last,
           "map_auc": auc1, "map_auc_untrained": auc0, "eval_pairs": args.eval_pairs}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    print(f"[demo] wrote {args.out}/motion_maps.png, motion_maps_untrained.png, loss.png, "
          f"results.json, model.pt, train_log.jsonl")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="micronbert", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="end-to-end demo on synthetic micro-motion of real faces (CPU)")
    d.add_argument("--out", default="runs/demo", help="output folder")
    d.add_argument("--steps", type=int, default=400, help="pre-training steps")
    d.add_argument("--batch", type=int, default=32, help="batch size")
    d.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    d.add_argument("--pairs", type=int, default=1024, help="training pairs to synthesise")
    d.add_argument("--eval-pairs", type=int, default=64, help="held-out pairs for the map AUC")
    d.add_argument("--seed", type=int, default=0, help="seed of everything")
    args = p.parse_args(argv)
    if args.cmd == "demo":
        demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
