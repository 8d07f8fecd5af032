"""The linear probe (``evaluate``): leave-one-subject-out, a linear head per fold on the
frozen encoder and DMA's ``pair_features``, always beside trivial baselines on the same
folds (pixel difference, optical flow, the untrained model). Fine-tuning
(``recognition.finetune``) trains encoder, DMA and head per fold instead; both write
``loso.json`` through ``report.write_loso``.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.backend import resolve_precision
from .features import frame_features, onset_apex_frames, pick_device, untrained_like
from .folds import class_weights, labelled, loso_splits
from .report import BASELINES_HOW, fold_table, write_loso


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


def feature_baselines(onset, apex, y, splits, n_classes, patch_size, **head_kw) -> dict:
    """Pixel difference and optical flow pooled to the patch grid, each with the linear head
    on the same folds: {name: predictions (K,)}."""
    from ..baselines import baseline_features
    return {name: probe(x, y, splits, n_classes, **head_kw)
            for name, x in baseline_features(onset, apex, patch_size).items()}


def evaluate(model, table, out_dir: str, classes: List[str], device: Optional[str] = None,
             baselines: bool = True, seed: int = 0, on_error: str = "raise", precision: str = "auto",
             **head_kw) -> dict:
    """The linear probe, LOSO: a linear head per fold on frozen ``pair_features``; with
    ``baselines`` the pixel difference, optical flow and the untrained model (same config,
    fresh init from ``seed``) on the same folds with the same head. ``on_error="skip"``:
    clips whose frames do not decode are dropped; they and the sheet's skips and repairs
    (``table.attrs["report"]``) are in the result's "data_report". Writes ``write_loso``'s
    files; returns loso.json's dict. ``precision``: of the encoder and DMA (auto | fp32 | bf16,
    ``kernels.backend.resolve_precision``); the heads train in fp32."""
    device = pick_device(device)
    precision = resolve_precision(precision, device)
    print(f"[evaluate] precision {precision} ({device})", file=sys.stderr)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    methods = {"model": probe(frame_features(model, onset, apex, device, precision=precision), y, splits, n, **head_kw)}
    if baselines:
        methods.update(feature_baselines(onset, apex, y, splits, n, model.config.patch_size, **head_kw))
        fresh = untrained_like(model, seed)
        methods["untrained"] = probe(frame_features(fresh, onset, apex, device, precision=precision), y, splits, n, **head_kw)
    how = {"model": "linear probe on frozen encoder + DMA features", **BASELINES_HOW,
           "untrained": "linear probe on a fresh model of the same config"}
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="probe", how=how,
                      extra={"precision": precision, "data_report": report.as_dict()})
