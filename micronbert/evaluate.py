"""Recognition: clip features from onset/apex frames through the encoder and DMA, a light
head fine-tuned per fold, leave-one-subject-out (LOSO) evaluation, metrics pooled over folds.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from .data.io import read_frames, resize_u8


def metrics(y_true, y_pred, n_classes: int) -> Dict[str, float]:
    """Accuracy, UF1 (unweighted mean F1) and UAR (unweighted mean recall) over
    ``range(n_classes)`` (a class absent from both scores F1 = recall = 0, as sklearn's
    zero_division=0)."""
    y, p = np.asarray(y_true), np.asarray(y_pred)
    f1s, recalls = [], []
    for c in range(n_classes):
        tp = int(((p == c) & (y == c)).sum())
        fp = int(((p == c) & (y != c)).sum())
        fn = int(((p != c) & (y == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return {"accuracy": float((y == p).mean()), "uf1": float(np.mean(f1s)), "uar": float(np.mean(recalls))}


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


@torch.no_grad()
def clip_features(model, table, device="cpu", batch: int = 32) -> torch.Tensor:
    """Per clip: the micro-motion profile 1 - D/max D (N), the per-patch change of the
    encoder tokens between onset and apex (N), and the mean DMA output (D)."""
    model.eval().to(device)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    feats = []
    for i in range(0, len(onset), batch):
        a, b = onset[i:i + batch].to(device), apex[i:i + batch].to(device)  # uint8
        out, diag, ta, tb = model.pair_forward(a, b)
        change = (tb - ta).norm(dim=-1)
        change = change / change.amax(1, keepdim=True).clamp_min(1e-12)
        feats.append(torch.cat([model.motion_profile(diag), change, out.float().mean(1)], 1).cpu())
    return torch.cat(feats)


def train_head(x, y, n_classes, epochs=300, lr=1e-2, weight_decay=1e-3, seed=0):
    """A linear head on standardised features (full-batch AdamW, class-balanced loss)."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    weight = counts.sum() / (n_classes * counts)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    xs = (x - mu) / sd
    for _ in range(epochs):
        loss = F.cross_entropy(head(xs), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda z: head((z - mu) / sd).argmax(1)


def loso(features, labels, subjects, n_classes, **head_kw):
    """Leave-one-subject-out: returns pooled predictions and a per-fold table."""
    labels = torch.as_tensor(labels)
    subjects = np.asarray(subjects)
    preds = torch.empty_like(labels)
    folds = []
    for s in sorted(set(subjects)):
        test = torch.from_numpy(subjects == s)
        predict = train_head(features[~test], labels[~test], n_classes, **head_kw)
        with torch.no_grad():
            preds[test] = predict(features[test])
        folds.append({"subject": s, "n": int(test.sum()),
                      **metrics(labels[test].numpy(), preds[test].numpy(), n_classes)})
    return preds, folds


def evaluate(model, table, out_dir: str, classes: List[str], device="cpu", on_error: str = "raise",
             **head_kw) -> dict:
    """LOSO on an annotation table; writes results.json, folds.csv and confusion.png.
    ``on_error="skip"``: clips whose frames do not decode are dropped; they and the sheet's
    skips and repairs (``table.attrs["report"]``) are in the result's "data_report"."""
    from .data.annotations import readable_rows
    from .data.report import DataReport
    from .viz import save_confusion
    report = DataReport().merge(table.attrs.get("report"))
    table = table[table["label"].notna()].reset_index(drop=True)
    table = readable_rows(table, on_error, report)
    y = torch.tensor(table["label"].astype(int).values)
    n_classes = len(classes)
    feats = clip_features(model, table, device)
    preds, folds = loso(feats, y, table["subject"].values, n_classes, **head_kw)
    res = metrics(y.numpy(), preds.numpy(), n_classes)
    res.update({"n_classes": n_classes, "n_subjects": int(table["subject"].nunique()),
                "n_clips": len(table), "chance_uf1": 1.0 / n_classes, "classes": classes,
                "folds": folds, "data_report": report.as_dict()})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "loso.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(out_dir, "folds.csv"), "w") as f:
        f.write("subject,n,accuracy,uf1,uar\n")
        for r in folds:
            f.write(f"{r['subject']},{r['n']},{r['accuracy']:.4f},{r['uf1']:.4f},{r['uar']:.4f}\n")
    save_confusion(os.path.join(out_dir, "confusion.png"), confusion(y.numpy(), preds.numpy(), n_classes),
                   classes, title=f"LOSO: acc {res['accuracy']:.3f}, UF1 {res['uf1']:.3f}, UAR {res['uar']:.3f}")
    return res
