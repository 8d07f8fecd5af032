"""Pre-training loop (single process). Short on purpose: AdamW (fused on CUDA),
warm-up + cosine schedule, EMA teacher, a stop on non-finite loss, JSON-lines log."""
from __future__ import annotations

import json
import math
import time
from typing import Callable, Iterator, Optional

import torch


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model, lr: float, weight_decay: float = 0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("cls_token") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused or None)


class NonFiniteLoss(RuntimeError):
    pass


def pretrain(model, batches: Callable[[int], Iterator], steps: int, lr: float = 1.5e-4,
             warmup: int = 20, ema: float = 0.996, log_path: Optional[str] = None,
             generator: Optional[torch.Generator] = None, progress: bool = True):
    """Train ``model`` for ``steps`` steps on ``batches(step) -> (frame_t, frame_next)``.

    Returns the list of per-step records (also written as JSON lines to ``log_path``).
    """
    from tqdm import tqdm

    opt = make_optimizer(model, lr)
    model.train()
    records = []
    log = open(log_path, "a") if log_path else None
    bar = tqdm(range(steps), desc="pretrain", disable=not progress, leave=False)
    try:
        for step in bar:
            for grp in opt.param_groups:
                grp["lr"] = cosine_lr(step, steps, lr, warmup)
            frame_t, frame_next = batches(step)
            t0 = time.perf_counter()
            out = model(frame_t, frame_next, generator=generator)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss {loss.item()} at step {step}; stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m = 1 - (1 - ema) * (math.cos(math.pi * step / steps) + 1) / 2
            model.update_teacher(m)
            rec = {"step": step, "loss": loss.item(), "rec_loss": out["rec_loss"].item(),
                   "poi_loss": out["poi_loss"].item(), "lr": opt.param_groups[0]["lr"],
                   "sec": time.perf_counter() - t0}
            records.append(rec)
            if log:
                log.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.4f}", rec=f"{rec['rec_loss']:.4f}")
    finally:
        if log:
            log.close()
    return records
