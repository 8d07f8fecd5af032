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
from .report import BASELINES_HOW, baseline_set, fold_table, write_loso


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


def shared_baselines(names, table, y, splits, n_classes, onset, apex, patch_size, out_dir, classes=None,
                     report=None, slstt: Optional[dict] = None, slstt_cfg=None, **head_kw):
    """The rows of ``names`` (``report.baseline_set``) that every LOSO run scores alike:
    pixel difference and optical flow (linear head), and SLSTT trained per fold with
    ``slstt_cfg`` (a FinetuneConfig; ``slstt``: ``slstt.train.baseline_row``'s options).
    Returns ({name: predictions (K,)}, {name: how it was made})."""
    methods, how = {}, {}
    if names & {"pixel_difference", "optical_flow"}:
        feats = feature_baselines(onset, apex, y, splits, n_classes, patch_size, **head_kw)
        methods.update({k: v for k, v in feats.items() if k in names})
        how.update({k: v for k, v in BASELINES_HOW.items() if k in names})
    if "slstt" in names:
        from ..slstt.train import baseline_row
        from .finetune import FinetuneConfig
        cfg = slstt_cfg if slstt_cfg is not None else FinetuneConfig()
        methods["slstt"], how["slstt"] = baseline_row(table, y, splits, n_classes, out_dir, cfg, report=report,
                                                      classes=classes, **(slstt or {}))
    return methods, how


def evaluate(model, table, out_dir: str, classes: List[str], device: Optional[str] = None,
             baselines=True, seed: int = 0, on_error: str = "raise", slstt: Optional[dict] = None,
             slstt_cfg=None, precision: str = "auto", **head_kw) -> dict:
    """The linear probe, LOSO: a linear head per fold on frozen ``pair_features``, beside
    ``baselines`` (``report.baseline_set``: True = the pixel difference, optical flow and the
    untrained model (same config, fresh init from ``seed``) with the same head on the same
    folds; "slstt" adds SLSTT, ``slstt``/``slstt_cfg`` as ``shared_baselines``; default
    ``FinetuneConfig(seed=seed)``). ``on_error="skip"``: clips whose frames do not decode are
    dropped; they and the sheet's skips and repairs (``table.attrs["report"]``) are in the
    result's "data_report". Writes ``write_loso``'s files; returns loso.json's dict.
    ``precision``: of the encoder and DMA (auto | fp32 | bf16, ``kernels.backend.resolve_precision``);
    the heads train in fp32."""
    names = baseline_set(baselines)
    device = pick_device(device)
    precision = resolve_precision(precision, device)
    print(f"[evaluate] precision {precision} ({device})", file=sys.stderr)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    methods = {"model": probe(frame_features(model, onset, apex, device, precision=precision), y, splits, n,
                                **head_kw)}
    if slstt_cfg is None and "slstt" in names:
        from .finetune import FinetuneConfig
        slstt_cfg = FinetuneConfig(seed=seed)
    rows, how = shared_baselines(names, table, y, splits, n, onset, apex, model.config.patch_size, out_dir,
                                 classes, report, slstt, slstt_cfg, **head_kw)
    methods.update(rows)
    if "untrained" in names:
        fresh = untrained_like(model, seed)
        methods["untrained"] = probe(frame_features(fresh, onset, apex, device, precision=precision), y, splits, n,
                                     **head_kw)
    how = {"model": "linear probe on frozen encoder + DMA features", **how,
           "untrained": "linear probe on a fresh model of the same config"}
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="probe", how=how,
                      extra={"precision": precision, "data_report": report.as_dict()})
