"""Recognition results: MEGC's metrics pooled over the folds, per fold and per dataset;
``loso.json``, ``folds.csv``, the confusion matrix and the bars, and a printed table."""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, Optional

import numpy as np
import torch

# how a feature baseline is scored (the probe and fine-tuning score them alike)
BASELINES_HOW = {"pixel_difference": "linear head on |apex - onset| pooled to the patch grid",
                 "optical_flow": "linear head on Farneback flow (u, v, magnitude) pooled to the patch grid"}


# the rows a LOSO run can put beside its model (``--baselines``), and those it puts by default
BASELINES = ("pixel_difference", "optical_flow", "untrained", "slstt")
DEFAULT_BASELINES = ("pixel_difference", "optical_flow", "untrained")


def baseline_set(baselines) -> frozenset:
    """The baseline rows asked for: True = DEFAULT_BASELINES, False/None = none, or names
    (a list, or one comma-separated string; "default" stands for DEFAULT_BASELINES, "none"
    for nothing). An unknown name is a ValueError naming the known ones."""
    if baselines is None or isinstance(baselines, bool):
        return frozenset(DEFAULT_BASELINES if baselines else ())
    names = baselines.split(",") if isinstance(baselines, str) else list(baselines)
    out = set()
    for name in (str(b).strip() for b in names):
        if name == "default":
            out.update(DEFAULT_BASELINES)
        elif name in BASELINES:
            out.add(name)
        elif name not in ("none", ""):
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}, default, none")
    return frozenset(out)


def metrics(y_true, y_pred, n_classes: int) -> Dict[str, float]:
    """Accuracy, UF1 (unweighted mean F1) and UAR (unweighted mean recall) over
    ``range(n_classes)`` (a class absent from both scores F1 = recall = 0, as sklearn's
    zero_division=0). Pooled over the folds' predictions this is MEGC's UF1/UAR: per-class
    TP/FP/FN summed over all held-out subjects, then F1 and recall averaged over classes."""
    y, p = np.asarray(y_true), np.asarray(y_pred)
    f1s, recalls = [], []
    for c in range(n_classes):
        tp = int(((p == c) & (y == c)).sum())
        fp = int(((p == c) & (y != c)).sum())
        fn = int(((p != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return {"accuracy": float((y == p).mean()) if len(y) else 0.0, "uf1": float(np.mean(f1s)),
            "uar": float(np.mean(recalls))}


def confusion(y_true, y_pred, n_classes):
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for a, b in zip(y_true, y_pred):
        m[a, b] += 1
    return m


def fold_row(subject: str, y_true, y_pred, n_classes: int) -> dict:
    """One held-out subject's line: subject, n, accuracy, uf1, uar."""
    return {"subject": subject, "n": len(y_true), **metrics(y_true, y_pred, n_classes)}


def fold_table(y, preds, splits, n_classes):
    return [fold_row(sp["subject"], y[sp["test"]], preds[sp["test"]], n_classes) for sp in splits]


def summarize(y, preds, splits, n_classes, datasets=None) -> dict:
    """Pooled metrics over the scored clips, per fold, and per dataset of a composite."""
    y, preds = np.asarray(y), np.asarray(preds)
    scored = preds >= 0
    res = {**metrics(y[scored], preds[scored], n_classes),
           "per_fold": fold_table(y, preds, splits, n_classes)}
    if datasets is not None:
        res["by_dataset"] = {d: metrics(y[scored & (datasets == d)], preds[scored & (datasets == d)], n_classes)
                             for d in sorted(set(datasets))}
    return res


def write_loso(out_dir, table, y, classes, methods: Dict[str, torch.Tensor], splits, skipped,
               mode: str, how: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """Write ``loso.json`` ({"model": {accuracy, uf1, uar, per_fold}, "baselines": {name:
    ...}}, the model's accuracy/uf1/uar also at the top), ``folds.csv`` (the model's folds),
    ``confusion.png`` (the model) and ``loso_bars.png`` (model and baselines). Returns the dict."""
    from ..viz import save_bars, save_confusion
    n = len(classes)
    y = np.asarray(y)
    datasets = table["dataset"].astype(str).values if "dataset" in table.columns else None
    summary = {k: summarize(y, p.numpy(), splits, n, datasets) for k, p in methods.items()}
    for k, v in summary.items():
        if how and k in how:
            v["how"] = how[k]
    model = summary.pop("model")
    scored = int((methods["model"].numpy() >= 0).sum())
    res = {"accuracy": model["accuracy"], "uf1": model["uf1"], "uar": model["uar"], "mode": mode,
           "n_classes": n, "n_subjects": int(table["subject"].nunique()), "n_clips": len(table),
           "n_clips_scored": scored, "chance_uf1": 1.0 / n, "classes": list(classes),
           "model": model, "baselines": summary, "skipped_folds": skipped, **(extra or {})}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "loso.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(out_dir, "folds.csv"), "w", newline="") as f:  # csv: quoted subjects
        w = csv.writer(f)
        w.writerow(["subject", "n", "accuracy", "uf1", "uar"])
        w.writerows([r["subject"], r["n"]] + [f"{r[k]:.4f}" for k in ("accuracy", "uf1", "uar")]
                    for r in model["per_fold"])
    p = methods["model"].numpy()
    save_confusion(os.path.join(out_dir, "confusion.png"), confusion(y[p >= 0], p[p >= 0], n), classes,
                   title=f"LOSO ({mode}): acc {res['accuracy']:.3f}, UF1 {res['uf1']:.3f}, UAR {res['uar']:.3f}")
    save_bars(os.path.join(out_dir, "loso_bars.png"), {"model": model, **summary}, chance=1.0 / n,
              title=f"LOSO ({mode}), {res['n_subjects']} subjects, {scored} clips")
    return res


def results_table(res: dict) -> str:
    """loso.json's methods as a few printed lines."""
    rows = [("model", res["model"])] + list(res.get("baselines", {}).items())
    lines = [f"{'':<18} {'acc':>6} {'UF1':>6} {'UAR':>6}"]
    lines += [f"{k:<18} {v['accuracy']:6.3f} {v['uf1']:6.3f} {v['uar']:6.3f}" for k, v in rows]
    return "\n".join(lines) + f"\n(chance UF1 {res['chance_uf1']:.3f}; {res['mode']}, " \
                              f"{res['n_subjects']} subjects, {res['n_clips_scored']} clips scored)"
