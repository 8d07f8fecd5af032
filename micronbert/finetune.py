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

from .augment import PairAugment, pair_augment
from .evaluate import (_device, class_weights, evaluate, feature_baselines, fold_seed, labelled,
                       loso_splits, metrics, onset_apex_frames, pair_features, safe_name,
                       untrained_like, write_loso)
from .train import classifier_epoch, dist_info


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
    bf16: bool = True  # bf16 autocast on CUDA
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
        from .checkpoint import load_checkpoint
        model, ck = load_checkpoint(path, map_location=map_location, backend=backend)
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


def _amp(device: str, bf16: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") and bf16 else nullcontext()


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
    amp = _amp(device, cfg.bf16)
    n = len(y)
    per_epoch = sum(1 for i in range(0, n, cfg.batch) if n - i >= 2)  # a batch of 1 is skipped (BatchNorm)
    total, warmup = cfg.epochs * per_epoch, int(round(cfg.warmup_epochs * per_epoch))
    log = open(log_path, "w") if log_path else None
    step = 0
    try:
        def forward(idx):
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


def load_model(model_or_checkpoint, backend: str = "auto"):
    """A MicronBERT as given, or read from our checkpoint or the authors'."""
    if not isinstance(model_or_checkpoint, (str, os.PathLike)):
        return model_or_checkpoint
    from .checkpoint import CheckpointError, load_checkpoint, load_official_checkpoint
    try:
        return load_checkpoint(model_or_checkpoint, backend=backend)[0]
    except CheckpointError:
        return load_official_checkpoint(model_or_checkpoint, backend=backend)


HOW = {"model": "fine-tuned end to end per fold (encoder + DMA + head)",
       "pixel_difference": "linear head on |apex - onset| pooled to the patch grid",
       "optical_flow": "linear head on Farneback flow (u, v, magnitude) pooled to the patch grid",
       "untrained": "a fresh model of the same config (same seed) fine-tuned the same way"}


def finetune(model_or_checkpoint, table, out_dir: str, classes: List[str], device: Optional[str] = None,
             baselines: bool = True, freeze: bool = False, backend: str = "auto", head_epochs: int = 300,
             save_models: bool = False, progress: bool = True, on_error: str = "raise",
             **hparams) -> Optional[dict]:
    """LOSO fine-tuning on an annotation table (``hparams``: FinetuneConfig's fields, ``aug``
    a PairAugment). ``freeze``: the linear probe (``evaluate``) instead. With ``baselines``
    the pixel difference and optical flow (linear head, ``head_epochs``) and the untrained
    model (fine-tuned the same way) on the same folds. Writes ``write_loso``'s files and the
    per-fold logs; returns loso.json's dict (None on ranks other than 0 under torchrun)."""
    model = load_model(model_or_checkpoint, backend)
    cfg = FinetuneConfig.from_hparams(**hparams)
    if freeze:
        return evaluate(model, table, out_dir, classes, device, baselines, seed=cfg.seed,
                        on_error=on_error, epochs=head_epochs)
    if cfg.epochs < 1 or cfg.batch < 2:
        raise ValueError(f"fine-tuning needs epochs >= 1 and batch >= 2, got {cfg.epochs} and {cfg.batch}")
    t_start = time.time()
    device = _device(device)
    table, y, report = labelled(table, classes, on_error)
    n = len(classes)
    splits, skipped = loso_splits(table["subject"].values, y, n)
    onset, apex = onset_apex_frames(table, model.config.img_size)
    rank, world = dist_info()
    nets = {"model": model}
    if baselines:
        nets["untrained"] = untrained_like(model, cfg.seed)
    jobs = [(k, i) for k in nets for i in range(len(splits))]
    os.makedirs(out_dir, exist_ok=True)
    mine = {}
    for j, (kind, i) in enumerate(jobs):
        if j % world != rank:
            continue
        sp = splits[i]
        subject, train, test = sp["subject"], torch.from_numpy(sp["train"]), torch.from_numpy(sp["test"])
        logdir = out_dir if kind == "model" else os.path.join(out_dir, kind)
        os.makedirs(logdir, exist_ok=True)
        log_path = os.path.join(logdir, f"fold_{safe_name(subject)}.jsonl")
        tag = f"{kind} fold {i + 1}/{len(splits)} {subject}"
        rec = train_fold(nets[kind], onset[train], apex[train], y[train], table[sp["train"]], n, cfg,
                         device, log_path, subject, tag, progress)
        pred = rec.predict(onset[test].to(device), apex[test].to(device), cfg.batch, _amp(device, cfg.bf16))
        fold = {"subject": subject, "n": int(test.sum()), **metrics(y[test].numpy(), pred.numpy(), n)}
        with open(log_path, "a") as f:
            f.write(json.dumps({"test": fold}) + "\n")
        if progress:
            print(f"[finetune] {tag}: held-out acc {fold['accuracy']:.3f} UF1 {fold['uf1']:.3f} "
                  f"UAR {fold['uar']:.3f} ({fold['n']} clips)", file=sys.stderr, flush=True)
        if save_models and kind == "model":
            from .checkpoint import save_checkpoint
            save_checkpoint(os.path.join(out_dir, f"fold_{safe_name(subject)}.pt"), rec.model,
                            head=rec.head.state_dict(), norm=rec.norm.state_dict(), classes=list(classes),
                            subject=subject, finetune=_cfg_dict(cfg))
        mine[(kind, i)] = pred
        del rec
    if world > 1:
        import torch.distributed as dist
        parts = [None] * world
        dist.all_gather_object(parts, mine)
        mine = {k: v for part in parts for k, v in part.items()}
        if rank != 0:
            return None
    preds = {k: torch.full_like(y, -1) for k in nets}
    for (kind, i), pred in mine.items():
        preds[kind][torch.from_numpy(splits[i]["test"])] = pred
    methods = {"model": preds["model"]}
    if baselines:
        methods.update(feature_baselines(onset, apex, y, splits, n, model.config.patch_size, epochs=head_epochs))
        methods["untrained"] = preds["untrained"]
    return write_loso(out_dir, table, y, classes, methods, splits, skipped, mode="finetune", how=HOW,
                      extra={"finetune": _cfg_dict(cfg), "device": device, "world_size": world,
                             "seconds": round(time.time() - t_start, 1), "data_report": report.as_dict()})


def _cfg_dict(cfg: FinetuneConfig) -> dict:
    d = asdict(cfg)
    d["aug"] = asdict(cfg.aug)
    return d


# ------------------------------------------------------------------ command line
def add_finetune_flags(p):
    """The ``finetune`` command's own flags (beside evaluate's)."""
    d = FinetuneConfig()
    p.add_argument("--freeze", action="store_true", help="the linear probe on frozen features (= evaluate)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs per fold")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (head, DMA, top of the encoder)")
    p.add_argument("--min-lr", type=float, default=d.min_lr, help="final learning rate of the cosine")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up")
    p.add_argument("--layer-decay", type=float, default=d.layer_decay,
                   help="learning rate x this per encoder block below the top")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--flip", type=float, default=None,
                   help="probability of a horizontal flip of a pair (default 0.5; 0 for "
                        "--dataset synthetic, whose classes are left/right mirror images)")
    p.add_argument("--rotate", type=float, default=d.aug.rotate, help="max rotation of a pair, degrees")
    p.add_argument("--crop-scale", type=float, nargs=2, default=d.aug.crop_scale, metavar=("MIN", "MAX"),
                   help="area fraction of the random square crop of a pair")
    p.add_argument("--jitter", type=float, default=d.aug.jitter,
                   help="brightness/contrast/saturation jitter of a pair")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--save-models", action="store_true", help="write each fold's weights to OUT/fold_<subject>.pt")


def run_finetune(args, model, table) -> Optional[dict]:
    """``micronbert finetune`` from its parsed flags."""
    flip = args.flip if args.flip is not None else (0.0 if args.dataset == "synthetic" else 0.5)
    aug = PairAugment(crop_scale=tuple(args.crop_scale), rotate=args.rotate, flip=flip, jitter=args.jitter)
    return finetune(model, table, args.out, table.attrs["classes"], baselines=not args.no_baselines,
                    freeze=args.freeze, head_epochs=args.head_epochs, save_models=args.save_models,
                    on_error=args.on_error,
                    epochs=args.epochs, batch=args.batch, lr=args.lr, min_lr=args.min_lr,
                    warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay,
                    weight_decay=args.weight_decay, bf16=not args.no_bf16, seed=args.seed, aug=aug)


def results_table(res: dict) -> str:
    """loso.json's methods as a few printed lines."""
    rows = [("model", res["model"])] + list(res.get("baselines", {}).items())
    lines = [f"{'':<18} {'acc':>6} {'UF1':>6} {'UAR':>6}"]
    lines += [f"{k:<18} {v['accuracy']:6.3f} {v['uf1']:6.3f} {v['uar']:6.3f}" for k, v in rows]
    return "\n".join(lines) + f"\n(chance UF1 {res['chance_uf1']:.3f}; {res['mode']}, " \
                              f"{res['n_subjects']} subjects, {res['n_clips_scored']} clips scored)"
