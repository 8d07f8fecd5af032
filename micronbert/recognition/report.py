"""Recognition results: MEGC's metrics pooled over the folds, per fold and per dataset;
``loso.json``, ``folds.csv``, the confusion matrix and the bars, and a printed table."""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, Optional

import numpy as np
import torch

from ..runs import atomic_output

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


# loso.json's metrics -> printed names (loso.md, the verdict)
LOSO_LABELS = {"uf1": "UF1", "uar": "UAR", "accuracy": "accuracy"}


def loso_verdict(res: dict) -> str:
    """The verdict sentence of a loso.json dict (``verdict.verdict`` on UF1, UAR, accuracy)."""
    from ..verdict import chance_levels, verdict
    chance = res.get("chance") or chance_levels(res["n_classes"])
    return verdict(res["model"], res.get("baselines", {}), chance, LOSO_LABELS)


def missing_classes(splits, classes) -> list:
    """The folds whose held-out subject has a class no training subject holds (its clips of
    that class cannot be predicted right): [{"subject", "classes"}]."""
    return [{"subject": sp["subject"], "classes": [classes[c] for c in sp["missing_classes"]]}
            for sp in splits if sp.get("missing_classes")]


def write_loso(out_dir, table, y, classes, methods: Dict[str, torch.Tensor], splits, skipped,
               mode: str, how: Optional[dict] = None, extra: Optional[dict] = None) -> dict:
    """Write ``loso.json`` (the verdict and chance levels first; {"model": {accuracy, uf1,
    uar, per_fold}, "baselines": {name: ...}}, the model's accuracy/uf1/uar also at the
    top), ``loso.md`` (the verdict, then the table with the spread over folds),
    ``folds.csv`` (the model's folds), ``confusion.png`` (the model's, normalised) and
    ``loso_bars.png`` (model and baselines, one point per fold). Returns the dict."""
    from ..verdict import chance_levels
    from ..viz import save_bars, save_confusion
    n = len(classes)
    y = np.asarray(y)
    datasets = table["dataset"].astype(str).values if "dataset" in table.columns else None
    summary = {k: summarize(y, p.numpy(), splits, n, datasets) for k, p in methods.items()}
    for k, v in summary.items():
        if how and k in how:
            v["how"] = how[k]
    model = summary.pop("model")
    p = methods["model"].numpy()
    scored = int((p >= 0).sum())
    chance = chance_levels(n, np.bincount(y[p >= 0], minlength=n).tolist())
    res = {"verdict": "", "chance": chance, "accuracy": model["accuracy"], "uf1": model["uf1"],
           "uar": model["uar"], "mode": mode,
           "n_classes": n, "n_subjects": int(table["subject"].nunique()), "n_clips": len(table),
           "n_clips_scored": scored, "chance_uf1": 1.0 / n, "classes": list(classes),
           "model": model, "baselines": summary, "skipped_folds": skipped,
           "folds_missing_classes": missing_classes(splits, classes), **(extra or {})}
    res["verdict"] = loso_verdict(res)
    os.makedirs(out_dir, exist_ok=True)
    with atomic_output(os.path.join(out_dir, "loso.json")) as tmp, open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    with atomic_output(os.path.join(out_dir, "loso.md")) as tmp, open(tmp, "w") as f:
        f.write(loso_markdown(res))
    with atomic_output(os.path.join(out_dir, "folds.csv")) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)  # csv: quoted subjects
        w.writerow(["subject", "n", "accuracy", "uf1", "uar"])
        w.writerows([r["subject"], r["n"]] + [f"{r[k]:.4f}" for k in ("accuracy", "uf1", "uar")]
                    for r in model["per_fold"])
    who = model.get("how", "the model")
    with atomic_output(os.path.join(out_dir, "confusion.png")) as tmp:
        save_confusion(tmp, confusion(y[p >= 0], p[p >= 0], n), classes,
                       title=f"{who} (LOSO, {mode}): acc {res['accuracy']:.3f}, UF1 {res['uf1']:.3f}, "
                             f"UAR {res['uar']:.3f}; chance UF1 {1 / n:.3f}")
    rows = {"model": model, **summary}
    with atomic_output(os.path.join(out_dir, "loso_bars.png")) as tmp:
        save_bars(tmp, rows, chance=chance,
                  spread={k: {m: [r[m] for r in v["per_fold"]] for m in ("accuracy", "uf1", "uar")}
                          for k, v in rows.items()},
                  title=f"LOSO ({mode}), {res['n_subjects']} subjects, {scored} clips: bars pooled "
                        f"over folds, points one per fold")
    return res


def loso_markdown(res: dict) -> str:
    """loso.md: the verdict, chance and best baselines, then every method with the spread
    of its UF1 over the folds."""
    from ..verdict import verdict_lines
    n = res["n_classes"]
    head = verdict_lines(res["model"], res.get("baselines", {}), res["chance"], LOSO_LABELS,
                         chance_notes={"uf1": f"1/{n} classes", "uar": f"1/{n} classes",
                                       "accuracy": "always the largest class"})
    lines = [f"# Leave-one-subject-out recognition ({res['mode']}): {res['n_subjects']} subjects, "
             f"{res['n_clips_scored']} clips scored, {n} classes", ""] + head
    lines += ["| method | accuracy | UF1 | UAR | UF1 per fold (min / median / max) | how |",
              "|---|---|---|---|---|---|"]
    for k, v in [("model", res["model"])] + list(res.get("baselines", {}).items()):
        f = [r["uf1"] for r in v.get("per_fold", [])]
        spread = f"{min(f):.3f} / {float(np.median(f)):.3f} / {max(f):.3f}" if f else "–"
        how = v.get("how", "").replace("|", "\\|")  # |apex - onset| inside a table cell
        lines.append(f"| {k} | {v['accuracy']:.3f} | {v['uf1']:.3f} | {v['uar']:.3f} | {spread} | {how} |")
    lines += ["", "Metrics pooled over the folds (MEGC: per-class counts summed over held-out "
              "subjects); per fold: each held-out subject alone. Files: loso.json (every number), "
              "folds.csv, confusion.png (the model), loso_bars.png."]
    return "\n".join(lines) + "\n"


def results_table(res: dict) -> str:
    """loso.json's methods as a few printed lines, the verdict last."""
    rows = [("model", res["model"])] + list(res.get("baselines", {}).items())
    lines = [f"{'':<18} {'acc':>6} {'UF1':>6} {'UAR':>6}"]
    lines += [f"{k:<18} {v['accuracy']:6.3f} {v['uf1']:6.3f} {v['uar']:6.3f}" for k, v in rows]
    return "\n".join(lines) + f"\n(chance UF1 {res['chance_uf1']:.3f}; {res['mode']}, " \
                              f"{res['n_subjects']} subjects, {res['n_clips_scored']} clips scored)" \
                              f"\nverdict: {res.get('verdict') or loso_verdict(res)}"
