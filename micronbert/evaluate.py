"""Recognition: leave-one-subject-out (LOSO) evaluation of onset/apex pairs, metrics pooled
over folds, always beside trivial baselines on the same folds.

``evaluate`` is the linear probe: clip features from the frozen encoder and DMA, a linear
head per fold. ``micronbert.finetune.finetune`` trains encoder, DMA and head per fold; both
write ``loso.json`` through ``write_loso`` here.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data.io import DataError, read_frames, resize_u8
from .names import safe_name  # noqa: F401 (public name; fold files use names.unique_names)


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


def onset_apex_frames(table, size):
    """uint8 (K, 3, *size) onset and apex frames of every clip of an annotation table."""
    pairs = [resize_u8(torch.from_numpy(read_frames(r.path, [r.onset_index, r.apex_index]))
                       .permute(0, 3, 1, 2), size) for r in table.itertuples()]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


# ------------------------------------------------------------------ folds
def labelled(table, classes: List[str], on_error: str = "raise"):
    """The clips with a label, their labels (K,) as a LongTensor, and the DataReport of the
    table's skips and repairs; a clear error for labels outside ``classes``, fewer than two
    subjects, or a class that has no clip. ``on_error="skip"``: clips whose frames do not
    decode are dropped (and counted in the report)."""
    from .data.annotations import readable_rows
    from .data.report import DataReport
    report = DataReport().merge(table.attrs.get("report"))
    table = table[table["label"].notna()].reset_index(drop=True)
    table = readable_rows(table, on_error, report)
    y = torch.tensor(table["label"].astype(int).values, dtype=torch.long)
    n = len(classes)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n):
        raise DataError(f"labels outside 0..{n - 1} for the {n} classes {classes}")
    subjects = sorted(table["subject"].astype(str).unique())
    if len(subjects) < 2:
        raise DataError(f"leave-one-subject-out needs at least 2 subjects with labelled clips; "
                        f"the table has {len(subjects)} ({subjects}, {len(table)} clips)")
    absent = [classes[c] for c in range(n) if not (y == c).any()]
    if absent:
        raise DataError(f"classes {absent} have no labelled clip: no head can learn them, and "
                        f"UF1/UAR would count them as 0; use a class map without them "
                        f"(--class-map) or add their clips")
    return table, y, report


def loso_splits(subjects, labels, n_classes: int):
    """One fold per subject: [{"subject", "train" (bool K), "test" (bool K)}] and the folds
    skipped because their training subjects hold fewer than 2 classes ([{subject, n, reason}]).
    Every training mask excludes its held-out subject, by construction and checked."""
    subjects = np.asarray(subjects).astype(str)
    y = np.asarray(labels)
    splits, skipped = [], []
    for s in sorted(set(subjects)):
        test = subjects == s
        train = ~test
        assert not (set(subjects[train]) & {s}), "held-out subject in its training fold"
        present = sorted(set(y[train].tolist()))
        if len(present) < 2:
            skipped.append({"subject": str(s), "n": int(test.sum()),
                            "reason": f"its training subjects hold {len(present)} class(es) "
                                      f"{present}: a head cannot be trained"})
            continue
        splits.append({"subject": str(s), "train": train, "test": test})
    if not splits:
        raise DataError(f"no LOSO fold can be trained: {skipped}")
    for k in skipped:
        print(f"[loso] fold {k['subject']} skipped ({k['n']} clips unscored): {k['reason']}",
              file=sys.stderr)
    return splits, skipped


def fold_seed(seed: int, subject: str) -> int:
    """A per-fold seed from the run's seed and the held-out subject (the same in every process)."""
    return (seed * 1_000_003 + zlib.crc32(subject.encode())) % (2 ** 63)


# ------------------------------------------------------------------ the probe
def pair_features(model, onset, apex) -> torch.Tensor:
    """Per pair (differentiable): the micro-motion profile 1 - D/max D (N), the per-patch
    change of the encoder tokens between onset and apex, scaled by its maximum (N), and the
    mean DMA output (D): (B, 2N + D), fp32."""
    out, diag, ta, tb = model.pair_forward(onset, apex)
    change = (tb.float() - ta.float()).norm(dim=-1)
    change = change / change.amax(1, keepdim=True).clamp_min(1e-12)
    return torch.cat([model.motion_profile(diag), change, out.float().mean(1)], 1)


@torch.no_grad()
def frame_features(model, onset, apex, device="cpu", batch: int = 32) -> torch.Tensor:
    """``pair_features`` of uint8 frame batches (K, 3, H, W), in eval mode, on the CPU."""
    model.eval().to(device)
    return torch.cat([pair_features(model, onset[i:i + batch].to(device), apex[i:i + batch].to(device)).cpu()
                      for i in range(0, len(onset), batch)])


def clip_features(model, table, device="cpu", batch: int = 32) -> torch.Tensor:
    """``pair_features`` of the onset and apex frames of every clip of ``table``."""
    onset, apex = onset_apex_frames(table, model.config.img_size)
    return frame_features(model, onset, apex, device, batch)


def class_weights(y, n_classes: int) -> torch.Tensor:
    """Class-balanced loss weights: K / (C * count_c) (count clamped at 1)."""
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def train_head(x, y, n_classes, epochs=300, lr=1e-2, weight_decay=1e-3, seed=0):
    """A linear head on standardised features (full-batch AdamW, class-balanced loss)."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    weight = class_weights(y, n_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    xs = (x - mu) / sd
    for _ in range(epochs):
        loss = F.cross_entropy(head(xs), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda z: head((z - mu) / sd).argmax(1)


def probe(features, labels, splits, n_classes, **head_kw) -> torch.Tensor:
    """A linear head per fold (``train_head``); predictions (K,), -1 where no fold scored."""
    labels = torch.as_tensor(labels)
    preds = torch.full_like(labels, -1)
    for sp in splits:
        train, test = torch.from_numpy(sp["train"]), torch.from_numpy(sp["test"])
        predict = train_head(features[train], labels[train], n_classes, **head_kw)
        with torch.no_grad():
            preds[test] = predict(features[test])
    return preds


def loso(features, labels, subjects, n_classes, **head_kw):
    """Leave-one-subject-out with the linear head: pooled predictions and a per-fold table."""
    splits, _ = loso_splits(subjects, labels, n_classes)
    preds = probe(features, labels, splits, n_classes, **head_kw)
    return preds, fold_table(np.asarray(labels), preds.numpy(), splits, n_classes)


def fold_table(y, preds, splits, n_classes):
    return [{"subject": sp["subject"], "n": int(sp["test"].sum()),
             **metrics(y[sp["test"]], preds[sp["test"]], n_classes)} for sp in splits]


def feature_baselines(onset, apex, y, splits, n_classes, patch_size, **head_kw) -> dict:
    """Pixel difference and optical flow pooled to the patch grid, each with the linear head
    on the same folds: {name: predictions (K,)}."""
    from .baselines import baseline_features
    return {name: probe(x, y, splits, n_classes, **head_kw)
            for name, x in baseline_features(onset, apex, patch_size).items()}


def untrained_like(model, seed: int = 0):
    """A fresh model of the same config and backend, initialised from ``seed`` (the
    caller's RNG state is left as it was)."""
    from .model import MicronBERT
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MicronBERT(model.config, backend=model.backend)


def _device(device):
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def evaluate(model, table, out_dir: str, classes: List[str], device: Optional[str] = None,
             baselines: bool = True, seed: int = 0, on_error: str = "raise", **head_kw) -> dict:
    """The linear probe, LOSO: a linear head per fold on frozen ``pair_features``; with
    ``baselines`` the pixel difference, optical flow and the untrained model (same config,
    fresh init from ``seed``) on the same folds with the same head. ``on_error="skip"``:
    clips whose frames do not decode are dropped; they and the sheet's skips and repairs
    (``table.attrs["report"]``) are in the result's "data_report". Writes ``write_loso``'s
    files; returns loso.json's dict."""
    device = _device(device)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    methods = {"model": probe(frame_features(model, onset, apex, device), y, splits, n, **head_kw)}
    if baselines:
        methods.update(feature_baselines(onset, apex, y, splits, n, model.config.patch_size, **head_kw))
        fresh = untrained_like(model, seed)
        methods["untrained"] = probe(frame_features(fresh, onset, apex, device), y, splits, n, **head_kw)
    how = {"model": "linear probe on frozen encoder + DMA features",
           "pixel_difference": "linear head on |apex - onset| pooled to the patch grid",
           "optical_flow": "linear head on Farneback flow (u, v, magnitude) pooled to the patch grid",
           "untrained": "linear probe on a fresh model of the same config"}
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="probe", how=how,
                      extra={"data_report": report.as_dict()})


# ------------------------------------------------------------------ results
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
    from .viz import save_bars, save_confusion
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
