"""SLSTT trained per leave-one-subject-out fold exactly as ``finetune`` trains μ-BERT: the
same folds (``loso_splits``), FinetuneConfig (AdamW, layer-wise lr decay over the ViT's
blocks, warm-up + cosine per step, class-balanced cross-entropy, fixed epochs, seeded per
fold by (seed, subject)), augmentation (``flow_augment``: ``pair_augment``'s crop, rotation
and flip on the flow fields), per-fold logs, ``--save-models`` checkpoints and loso.json.

``finetune_slstt`` is the entry point of ``micronbert finetune --model slstt_tiny``;
``slstt_baseline`` gives the pooled predictions another run adds as its "slstt" row.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from typing import List, Optional

import torch

from ..kernels.backend import precision
from ..names import unique_names, write_names
from ..recognition.features import pick_device
from ..recognition.finetune import FinetuneConfig
from ..recognition.folds import class_weights, fold_seed, labelled, loso_splits
from ..recognition.report import baseline_set, metrics, write_loso
from ..train import classifier_epoch
from .flow import flow_augment, table_flows
from .model import SLSTT, SLSTTConfig, create_slstt, get_slstt_config


def param_groups(net: SLSTT, weight_decay: float, layer_decay: float):
    """AdamW groups with ``lr_scale`` as ``finetune.param_groups``: layer 0 the patch
    embedding, class token and positions, 1..depth the blocks, depth + 1 the encoder's norm,
    the aggregator and the head."""
    depth = net.config.depth
    groups = {}
    for name, p in net.named_parameters():
        if name.startswith("encoder.blocks."):
            lid = int(name.split(".")[2]) + 1
        elif name.startswith(("encoder.patch_embed.", "encoder.cls_token", "encoder.pos_embed")):
            lid = 0
        else:
            lid = depth + 1
        decay = p.ndim > 1 and not name.endswith(("cls_token", "pos_embed"))
        g = groups.setdefault((lid, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                             "lr_scale": layer_decay ** (depth + 1 - lid)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def _logits(net, x, cfg: FinetuneConfig, g, amp):
    with amp:
        return net(flow_augment(x, cfg.aug, g)).float()


def train_slstt_fold(scfg: SLSTTConfig, x, y, n_classes: int, cfg: FinetuneConfig, device: str,
                     log_path: Optional[str] = None, subject: str = "", tag: str = "slstt fold",
                     progress: bool = True) -> SLSTT:
    """A fresh SLSTT trained on one fold's training clips only: flows ``x`` (K, T, 3, H, W)
    and labels ``y`` (K,). Seeded by (cfg.seed, subject). Returns it in eval mode."""
    if len(x) != len(y):
        raise ValueError(f"{tag}: {len(x)} flow stacks but {len(y)} labels")
    g = torch.Generator().manual_seed(fold_seed(cfg.seed, subject))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(fold_seed(cfg.seed, subject))  # init and DropPath draws
        net = create_slstt(scfg, n_classes).to(device)
        opt = torch.optim.AdamW(param_groups(net, cfg.weight_decay, cfg.layer_decay), lr=cfg.lr)
        x, y = x.to(device), y.to(device)
        weight = class_weights(y.cpu(), n_classes).to(device)
        per_epoch = sum(1 for i in range(0, len(y), cfg.batch) if len(y) - i >= 2)
        total, warmup = cfg.epochs * per_epoch, int(round(cfg.warmup_epochs * per_epoch))
        step, amp = 0, precision(device, cfg.bf16)
        with open(log_path, "w") if log_path else open(os.devnull, "w") as log:
            for epoch in range(cfg.epochs):
                t0 = time.perf_counter()
                step, e = classifier_epoch(lambda idx: _logits(net.train(), x[idx], cfg, g, amp), opt, y, weight,
                                           cfg, g, step, total, warmup, f"{tag}, epoch {epoch + 1}")
                e = {"epoch": epoch + 1, "step": step, **e, "lr": opt.param_groups[-1]["lr"],
                     "sec": round(time.perf_counter() - t0, 3)}
                log.write(json.dumps(e) + "\n")
                if progress:
                    print(f"[slstt] {tag}: epoch {epoch + 1}/{cfg.epochs} loss {e['loss']:.4f} "
                          f"train acc {e['train_acc']:.2f} {e['sec']:.1f}s", file=sys.stderr, flush=True)
    return net.eval()


@torch.no_grad()
def predict(net: SLSTT, x, batch: int, amp) -> torch.Tensor:
    """Class predictions (K,) of flows (K, T, 3, H, W), in eval mode."""
    net.eval()
    dev = next(net.parameters()).device
    with amp:
        return torch.cat([net(x[i:i + batch].to(dev)).float().argmax(1).cpu() for i in range(0, len(x), batch)])


def slstt_predictions(flows, y, splits, n_classes: int, scfg: SLSTTConfig, cfg: FinetuneConfig,
                      device: str = "cpu", out_dir: Optional[str] = None, classes=None,
                      save_models: bool = False, progress: bool = True) -> torch.Tensor:
    """Per fold, a fresh SLSTT trained on the training subjects' flows, predicting the
    held-out subject: pooled predictions (K,), -1 where no fold scored. With ``out_dir``
    a JSON-lines log per fold, and with ``save_models`` OUT/fold_<subject>.pt."""
    preds = torch.full_like(y, -1)
    names = unique_names(sp["subject"] for sp in splits)  # fold_<name>.*: one file per subject
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_names(os.path.join(out_dir, "fold_names.json"), names, "fold_<name>.* file -> subject")
    for i, sp in enumerate(splits):
        subject, train, test = sp["subject"], torch.from_numpy(sp["train"]), torch.from_numpy(sp["test"])
        tag = f"slstt fold {i + 1}/{len(splits)} {subject}"
        log = os.path.join(out_dir, f"fold_{names[subject]}.jsonl") if out_dir else None
        net = train_slstt_fold(scfg, flows[train], y[train], n_classes, cfg, device, log, subject, tag, progress)
        preds[test] = predict(net, flows[test], cfg.batch, precision(device, cfg.bf16))
        fold = {"subject": subject, "n": int(test.sum()), **metrics(y[test].numpy(), preds[test].numpy(), n_classes)}
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"test": fold}) + "\n")
        if progress:
            print(f"[slstt] {tag}: held-out acc {fold['accuracy']:.3f} UF1 {fold['uf1']:.3f} "
                  f"({fold['n']} clips)", file=sys.stderr, flush=True)
        if save_models and out_dir:
            torch.save({"slstt": asdict(scfg), "state_dict": net.state_dict(), "classes": list(classes or []),
                        "subject": subject, "finetune": cfg.as_dict()},
                       os.path.join(out_dir, f"fold_{names[subject]}.pt"))
    return preds


def load_slstt(path: str, map_location="cpu"):
    """A fold's SLSTT written by ``save_models``: (SLSTT in eval mode, the checkpoint dict)."""
    ck = torch.load(path, map_location=map_location, weights_only=True)
    net = SLSTT(SLSTTConfig(**ck["slstt"]), len(ck["classes"]))
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck


def slstt_baseline(table, y, splits, n_classes: int, cfg: FinetuneConfig, scfg="slstt_tiny",
                   device: str = "cpu", flow: str = "farneback", flow_cache: Optional[str] = None,
                   face_cache: Optional[str] = None, report=None, out_dir: Optional[str] = None,
                   classes=None, save_models: bool = False, progress: bool = True) -> torch.Tensor:
    """SLSTT on a labelled table's LOSO folds (``labelled`` and ``loso_splits``'s): the flow
    fields (cached in ``flow_cache``), then ``slstt_predictions``; (K,) predictions, the
    "slstt" row another run (``finetune``, ``evaluate``) can add beside its baselines."""
    scfg = get_slstt_config(scfg) if isinstance(scfg, str) else scfg
    flows = table_flows(table, scfg.img_size, scfg.frames, flow, flow_cache, face_cache, report, progress)
    return slstt_predictions(flows, y, splits, n_classes, scfg, cfg, device, out_dir, classes, save_models, progress)


def baseline_row(table, y, splits, n_classes: int, out_dir: str, cfg: FinetuneConfig, model: str = "slstt_tiny",
                 aggregator: Optional[str] = None, flow: str = "farneback", flow_cache: Optional[str] = None,
                 face_cache: Optional[str] = None, report=None, classes=None, device: Optional[str] = None,
                 progress: bool = True):
    """The "slstt" row of another model's LOSO run (``evaluate``, ``finetune``): SLSTT
    ``model`` with ``aggregator`` trained with ``cfg`` on the same folds; per-fold logs in
    OUT/slstt/, flow fields cached in ``flow_cache`` (default OUT/flow_cache). Returns
    (predictions (K,), how the row was made)."""
    scfg = get_slstt_config(model, aggregator=aggregator)
    preds = slstt_baseline(table, y, splits, n_classes, cfg, scfg, pick_device(device), flow,
                           flow_cache or os.path.join(out_dir, "flow_cache"), face_cache, report,
                           os.path.join(out_dir, "slstt"), classes, False, progress)
    return preds, (f"{model} (ViT on onset->frame {flow} flow, {scfg.aggregator} aggregator) trained per fold "
                   f"from scratch ({cfg.epochs} epochs, lr {cfg.lr:g}), docs/slstt.md")


HOW = {"model": "SLSTT trained per fold from scratch (ViT on onset->frame flow, {agg} aggregator, head)",
       "pixel_difference": "linear head on |apex - onset| pooled to the patch grid",
       "optical_flow": "linear head on Farneback flow (u, v, magnitude) pooled to the patch grid"}


def finetune_slstt(table, out_dir: str, classes: List[str], model: str = "slstt_tiny",
                   aggregator: Optional[str] = None, device: Optional[str] = None, baselines=True,
                   flow: str = "farneback", flow_cache: Optional[str] = None, face_cache: Optional[str] = None,
                   head_epochs: int = 300, save_models: bool = False, progress: bool = True,
                   on_error: str = "raise", slstt_overrides: Optional[dict] = None, **hparams) -> dict:
    """LOSO training of SLSTT (``model`` a named SLSTT config, ``aggregator`` "lstm" | "mean",
    ``hparams`` FinetuneConfig's fields) on an annotation table, with the pixel difference and
    optical flow baselines on the same folds where ``baselines`` (``baseline_set``) has them. Flow fields are cached in ``flow_cache``
    (default OUT/flow_cache). Writes ``write_loso``'s files and per-fold logs; returns
    loso.json's dict, as ``finetune``."""
    cfg = FinetuneConfig.from_hparams(**hparams)
    if cfg.epochs < 1 or cfg.batch < 2:
        raise ValueError(f"training needs epochs >= 1 and batch >= 2, got {cfg.epochs} and {cfg.batch}")
    scfg = get_slstt_config(model, aggregator=aggregator, **(slstt_overrides or {}))
    t_start, device = time.time(), pick_device(device)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    methods = {"model": slstt_baseline(table, y, splits, n, cfg, scfg, device, flow,
                                       flow_cache or os.path.join(out_dir, "flow_cache"), face_cache, report,
                                       out_dir, classes, save_models, progress)}
    names = baseline_set(baselines) & {"pixel_difference", "optical_flow"}  # SLSTT has no untrained twin
    if names:
        from ..recognition.features import onset_apex_frames
        from ..recognition.probe import shared_baselines
        onset, apex = onset_apex_frames(table, scfg.img_size)
        methods.update(shared_baselines(names, table, y, splits, n, onset, apex, scfg.patch_size, out_dir,
                                        epochs=head_epochs)[0])
    how = {**HOW, "model": HOW["model"].format(agg=scfg.aggregator)}
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="finetune", how=how,
                      extra={"slstt": asdict(scfg), "slstt_model": model, "flow": flow, "finetune": cfg.as_dict(),
                             "device": device, "seconds": round(time.time() - t_start, 1),
                             "data_report": report.as_dict()})
