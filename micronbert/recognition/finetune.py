"""End-to-end fine-tuning per leave-one-subject-out fold (docs/method.md §8).

Per fold, a copy of the pre-trained μ-Encoder and DMA and a new head are trained on the
onset/apex pairs of the training subjects only, then predict the held-out subject:

- the head: BatchNorm (no affine) + linear on ``pair_features`` — the probe's features
  (micro-motion profile 1 - D/max D per patch, per-patch token change onset -> apex, mean
  DMA output), now differentiable, so fine-tuning and the probe differ only in what is
  trained. The BatchNorm is the probe's standardisation; after training it is set to the
  statistics of the whole training fold (no augmentation), which the test clips then use.
- AdamW, layer-wise learning-rate decay (head, DMA and the encoder's final norm at ``lr``,
  block i at ``lr * layer_decay ** (depth - i)``, the patch embedding lowest), warm-up +
  cosine per step, class-balanced cross-entropy, a fixed number of epochs (no stopping
  rule: nothing looks at the held-out subject before it is predicted), pair-aligned
  augmentations (``augment.pair_augment``), bf16 autocast on CUDA (fp32 on the CPU), on the
  model's backend (chosen when it was built). Seeded per fold by (seed, subject).
- a JSON-lines log per fold (``OUT/fold_<subject>.jsonl``; the untrained baseline's under
  ``OUT/untrained/``), a line per epoch on stderr, ``--save-models``: ``OUT/fold_<subject>.pt``.
- under torchrun the (method, fold) jobs are dealt round robin to the ranks; rank 0 gathers
  the predictions and writes the results.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

import torch
import torch.nn as nn

from ..augment import PairAugment, pair_augment
from ..kernels.backend import precision, resolve_precision
from ..train import classifier_epoch, dist_info
from .features import onset_apex_frames, pair_features, pick_device, untrained_like
from ..names import unique_names, write_names
from .folds import class_weights, fold_seed, labelled, loso_splits
from .probe import evaluate, shared_baselines
from .report import BASELINES_HOW, baseline_set, fold_row, write_loso


@dataclass
class FinetuneConfig:
    """Hyper-parameters of fine-tuning (the same for every fold and for the untrained baseline)."""
    epochs: int = 30
    batch: int = 32
    lr: float = 5e-4  # peak learning rate of the head, DMA and the encoder's final norm
    min_lr: float = 1e-6
    warmup_epochs: float = 2.0
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    precision: str = "auto"  # auto | fp32 | bf16 (kernels.backend.resolve_precision)
    bf16: bool = True  # deprecated: False = precision "fp32"
    seed: int = 0
    aug: PairAugment = field(default_factory=PairAugment)

    @classmethod
    def from_hparams(cls, **hparams) -> "FinetuneConfig":
        """From keyword settings (``aug`` a PairAugment or its dict); an unknown name is an error."""
        known = {f.name for f in fields(cls)}
        if set(hparams) - known:
            raise TypeError(f"unknown fine-tuning settings {sorted(set(hparams) - known)}; known: {sorted(known)}")
        if isinstance(hparams.get("aug"), dict):
            hparams["aug"] = PairAugment(**hparams["aug"])
        return cls(**hparams)

    @property
    def asked_precision(self) -> str:
        """``precision``, or "fp32" where the deprecated ``bf16=False`` is given."""
        return self.precision if self.bf16 else "fp32"

    def as_dict(self) -> dict:
        """The settings as plain JSON values (``aug`` as its dict), as checkpoints store them."""
        d = asdict(self)
        d["aug"] = asdict(self.aug)
        return d


class Recognizer(nn.Module):
    """A MicronBERT's encoder and DMA, and a linear head on ``pair_features`` behind a
    BatchNorm without affine. ``forward(onset, apex)`` -> logits (B, classes)."""

    def __init__(self, model, n_classes: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.model = model
        nf = 2 * model.config.num_patches + model.config.embed_dim
        self.norm = nn.BatchNorm1d(nf, affine=False)
        self.head = nn.Linear(nf, n_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.01)
            self.head.bias.zero_()

    def features(self, onset, apex):
        return pair_features(self.model, onset, apex)

    def forward(self, onset, apex):
        return self.head(self.norm(self.features(onset, apex)))

    @torch.no_grad()
    def calibrate(self, onset, apex, batch: int, amp=nullcontext()):
        """Set the BatchNorm to the statistics of these (training) clips' features."""
        self.eval()
        with amp:
            x = torch.cat([self.features(onset[i:i + batch], apex[i:i + batch]).float()
                           for i in range(0, len(onset), batch)])
        self.norm.running_mean.copy_(x.mean(0))
        self.norm.running_var.copy_(x.var(0) if len(x) > 1 else torch.ones_like(x[0]))

    @torch.no_grad()
    def predict(self, onset, apex, batch: int, amp=nullcontext()) -> torch.Tensor:
        self.eval()
        with amp:
            return torch.cat([self(onset[i:i + batch], apex[i:i + batch]).float().argmax(1).cpu()
                              for i in range(0, len(onset), batch)])

    @classmethod
    def from_checkpoint(cls, path: str, backend: str = "auto", map_location="cpu"):
        """A fold's model written by ``--save-models``: (Recognizer, the checkpoint dict)."""
        from ..checkpoint import load_checkpoint
        model, ck = load_checkpoint(path, map_location=map_location, backend=backend, fold=True)
        rec = cls(model, len(ck["classes"]))
        rec.head.load_state_dict(ck["head"])
        rec.norm.load_state_dict(ck["norm"])
        return rec.eval(), ck


def _layer(name: str, depth: int) -> int:
    """Layer of a Recognizer parameter: 0 patch embedding and CT, 1..depth the blocks,
    depth + 1 the encoder's norm, DMA and the head."""
    if name.startswith("model.backbone.blocks."):
        return int(name.split(".")[3]) + 1
    if name.startswith(("model.backbone.patch_embed.", "model.backbone.cls_token")):
        return 0
    return depth + 1


def param_groups(rec: Recognizer, weight_decay: float, layer_decay: float):
    """AdamW groups of what fine-tuning trains (encoder, DMA, head; not the decoder, PoI
    head or teacher, which recognition does not use), each with its ``lr_scale``."""
    depth = rec.model.config.depth
    groups = {}
    for name, p in rec.named_parameters():
        if not p.requires_grad or (name.startswith("model.")
                                   and not name.startswith(("model.backbone.", "model.att."))):
            continue
        lid = _layer(name, depth)
        decay = p.ndim > 1 and not name.endswith("cls_token")
        g = groups.setdefault((lid, decay), {"params": [], "names": [], "layer": lid,
                                             "weight_decay": weight_decay if decay else 0.0,
                                             "lr_scale": layer_decay ** (depth + 1 - lid)})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def train_fold(model, onset, apex, y, train_table, n_classes: int, cfg: FinetuneConfig, device: str,
               log_path: Optional[str] = None, subject: str = "", tag: str = "fold",
               progress: bool = True) -> Recognizer:
    """Fine-tune a copy of ``model`` on one fold's training clips: the rows ``train_table``
    and their uint8 frames ``onset``/``apex`` (K, 3, H, W) and labels ``y`` (K,), all of
    the training subjects only. ``subject`` (the held-out one) and ``cfg.seed`` seed the
    fold; ``tag`` names it in messages. Returns the Recognizer, calibrated, in eval mode."""
    if len(onset) != len(train_table) or len(y) != len(train_table):
        raise ValueError(f"{tag}: {len(train_table)} training rows but {len(onset)} frames and {len(y)} labels")
    g = torch.Generator().manual_seed(fold_seed(cfg.seed, subject))
    rec = Recognizer(copy.deepcopy(model), n_classes, g).to(device)
    groups = param_groups(rec, cfg.weight_decay, cfg.layer_decay)
    opt = torch.optim.AdamW([{k: v for k, v in grp.items() if k != "names"} for grp in groups],
                            lr=cfg.lr, betas=(0.9, 0.999))
    onset, apex, y = onset.to(device), apex.to(device), y.to(device)
    weight = class_weights(y.cpu(), n_classes).to(device)
    amp = precision(device, cfg.asked_precision)
    n = len(y)
    per_epoch = sum(1 for i in range(0, n, cfg.batch) if n - i >= 2)  # a batch of 1 is skipped (BatchNorm)
    total, warmup = cfg.epochs * per_epoch, int(round(cfg.warmup_epochs * per_epoch))
    log = open(log_path, "w") if log_path else None
    step = 0  # of the cosine's total, after its warm-up
    try:
        def forward(idx):  # logits of a batch of augmented pairs
            a, b = pair_augment(onset[idx], apex[idx], cfg.aug, g)
            with amp:
                return rec(a, b).float()

        for epoch in range(cfg.epochs):
            t0, rec = time.perf_counter(), rec.train()
            step, e = classifier_epoch(forward, opt, y, weight, cfg, g, step, total, warmup,
                                       f"{tag}, epoch {epoch + 1}")
            entry = {"epoch": epoch + 1, "step": step, **e, "lr": opt.param_groups[-1]["lr"],
                     "sec": round(time.perf_counter() - t0, 3)}
            if log:
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if progress:
                print(f"[finetune] {tag}: epoch {epoch + 1}/{cfg.epochs} loss {entry['loss']:.4f} "
                      f"train acc {entry['train_acc']:.2f} lr {entry['lr']:.2e} {entry['sec']:.1f}s",
                      file=sys.stderr, flush=True)
    finally:
        if log:
            log.close()
    rec.calibrate(onset, apex, cfg.batch, amp)
    return rec


HOW = {"model": "fine-tuned end to end per fold (encoder + DMA + head)", **BASELINES_HOW,
       "untrained": "a fresh model of the same config (same seed) fine-tuned the same way"}


def _run_fold(model, tag: str, sp: dict, frames, table, classes, cfg: FinetuneConfig, device: str,
              logdir: str, save_model: bool, progress: bool) -> torch.Tensor:
    """Fine-tune on fold ``sp``'s training clips and predict its held-out subject: the
    predictions (its test clips); the fold's log ``logdir/fold_<sp["file"]>.jsonl`` (and, with
    ``save_model``, its weights ``logdir/fold_<sp["file"]>.pt``); ``fold_names.json`` maps them back."""
    onset, apex, y = frames
    n = len(classes)
    subject, train, test = sp["subject"], torch.from_numpy(sp["train"]), torch.from_numpy(sp["test"])
    os.makedirs(logdir, exist_ok=True)
    log_path = os.path.join(logdir, f"fold_{sp['file']}.jsonl")
    tag = f"{tag} {subject}"
    rec = train_fold(model, onset[train], apex[train], y[train], table[sp["train"]], n, cfg,
                     device, log_path, subject, tag, progress)
    pred = rec.predict(onset[test].to(device), apex[test].to(device), cfg.batch, precision(device, cfg.asked_precision))
    fold = fold_row(subject, y[test].numpy(), pred.numpy(), n)
    with open(log_path, "a") as f:
        f.write(json.dumps({"test": fold}) + "\n")
    if progress:
        print(f"[finetune] {tag}: held-out acc {fold['accuracy']:.3f} UF1 {fold['uf1']:.3f} "
              f"UAR {fold['uar']:.3f} ({fold['n']} clips)", file=sys.stderr, flush=True)
    if save_model:
        from ..checkpoint import save_checkpoint
        save_checkpoint(os.path.join(logdir, f"fold_{sp['file']}.pt"), rec.model,
                        head=rec.head.state_dict(), norm=rec.norm.state_dict(), classes=list(classes),
                        subject=subject, finetune=cfg.as_dict())
    return pred


def _gather(mine: dict, world: int) -> dict:
    """Every rank's {(method, fold): predictions}, merged (torchrun)."""
    import torch.distributed as dist
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


def finetune(model_or_checkpoint, table, out_dir: str, classes: List[str], device: Optional[str] = None,
             baselines=True, freeze: bool = False, backend: str = "auto", head_epochs: int = 300,
             save_models: bool = False, progress: bool = True, on_error: str = "raise",
             slstt: Optional[dict] = None, **hparams) -> Optional[dict]:
    """LOSO fine-tuning on an annotation table (``hparams``: FinetuneConfig's fields, ``aug``
    a PairAugment). ``freeze``: the linear probe (``evaluate``) instead. ``baselines``
    (``report.baseline_set``; True: the default rows) on the same folds: the pixel difference
    and optical flow (linear head, ``head_epochs``), the untrained model (fine-tuned the same
    way), "slstt" (SLSTT trained with the same FinetuneConfig, ``slstt``: its options, on
    rank 0). Writes ``write_loso``'s files and the per-fold logs; returns loso.json's dict
    (None on ranks other than 0 under torchrun)."""
    model = model_or_checkpoint
    if isinstance(model, (str, os.PathLike)):  # ours or the authors', told apart by the file's content
        from ..checkpoint import load_model
        model = load_model(model, backend=backend)
    cfg = FinetuneConfig.from_hparams(**hparams)
    if freeze:
        return evaluate(model, table, out_dir, classes, device, baselines, seed=cfg.seed,
                        on_error=on_error, slstt=slstt, slstt_cfg=cfg, epochs=head_epochs,
                        precision=cfg.asked_precision)
    if cfg.epochs < 1 or cfg.batch < 2:
        raise ValueError(f"fine-tuning needs epochs >= 1 and batch >= 2, got {cfg.epochs} and {cfg.batch}")
    t_start = time.time()
    device = pick_device(device)
    prec = resolve_precision(cfg.asked_precision, device)
    if dist_info()[0] == 0:
        print(f"[finetune] precision {prec} (asked {cfg.asked_precision}, {device})", file=sys.stderr)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    rank, world = dist_info()
    asked = baseline_set(baselines)
    nets = {"model": model}
    if "untrained" in asked:
        nets["untrained"] = untrained_like(model, cfg.seed)
    jobs = [(k, i) for k in nets for i in range(len(splits))]
    os.makedirs(out_dir, exist_ok=True)
    names = unique_names(sp["subject"] for sp in splits)  # fold_<name>.*: one file per subject
    if rank == 0:
        write_names(os.path.join(out_dir, "fold_names.json"), names, "fold_<name>.* file -> subject")
    splits = [{**sp, "file": names[sp["subject"]]} for sp in splits]
    mine = {}
    for j, (kind, i) in enumerate(jobs):
        if j % world != rank:
            continue
        mine[(kind, i)] = _run_fold(nets[kind], f"{kind} fold {i + 1}/{len(splits)}", splits[i],
                                    (onset, apex, y), table, classes, cfg, device,
                                    out_dir if kind == "model" else os.path.join(out_dir, kind),
                                    save_models and kind == "model", progress)
    if world > 1:
        mine = _gather(mine, world)
        if rank != 0:
            return None
    preds = {k: torch.full_like(y, -1) for k in nets}
    for (kind, i), pred in mine.items():
        preds[kind][torch.from_numpy(splits[i]["test"])] = pred
    rows, how = shared_baselines(asked, table, y, splits, n, onset, apex, model.config.patch_size, out_dir,
                                 classes, report, slstt, cfg, epochs=head_epochs)
    methods = {"model": preds["model"], **rows, **{k: v for k, v in preds.items() if k != "model"}}
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="finetune", how={**HOW, **how},
                      extra={"finetune": cfg.as_dict(), "device": device, "precision": prec, "world_size": world,
                             "seconds": round(time.time() - t_start, 1), "data_report": report.as_dict()})


