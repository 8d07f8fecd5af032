"""Pre-training: one GPU, many, or the CPU. Short on purpose (nanoGPT/MAE style):
AdamW (fused on CUDA; apex's FusedAdam when installed), warm-up + cosine schedule,
gradient accumulation, the PoI EMA teacher, bf16 autocast on CUDA, a stop on a
non-finite loss, atomic checkpoints with exact resume (model, optimiser, schedule
position, RNG, loader position), a progress bar, JSON-lines logs, optional TensorBoard,
and DistributedDataParallel under ``torchrun`` (nccl on GPU, gloo on CPU).
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from typing import Optional

import torch
import torch.distributed as dist

from .checkpoint import load_checkpoint, save_checkpoint
from .data.synthetic import normalize


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def ema_momentum(step: int, total: int, base: float) -> float:
    """DINO's cosine schedule of the teacher momentum, from ``base`` to 1."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total)) + 1) / 2


def make_optimizer(model, lr: float, weight_decay: float = 0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("cls_token") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    cuda = all(p.is_cuda for p in decay + no_decay)
    if cuda:
        try:
            from apex.optimizers import FusedAdam  # only where apex happens to be installed
            return FusedAdam(groups, lr=lr, betas=(0.9, 0.95), adam_w_mode=True)
        except Exception:
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True if cuda else None)


LOSSES = ("loss", "rec_loss", "poi_loss", "diag_loss")


class NonFiniteLoss(RuntimeError):
    pass


def dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed():
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist_info()


def train(model, loader, steps: int, out_dir: str, lr: float = 1.5e-4, min_lr: float = 0.0,
          warmup: int = 20, weight_decay: float = 0.05, accum: int = 1, ema: float = 0.996,
          ckpt_every: int = 100, resume: Optional[str] = None, bf16: bool = True,
          compile: bool = False, progress: bool = True, tensorboard: bool = False,
          stop_after: Optional[int] = None, device: Optional[str] = None):
    """Pre-train ``model`` on ``loader`` (a PairLoader) for ``steps`` optimiser steps.

    Checkpoints go to ``out_dir/last.pt`` (atomically) every ``ckpt_every`` steps and at the
    end; ``resume`` continues exactly from such a file. ``stop_after`` ends the run early
    (as if killed) after that many steps, leaving the checkpoint. Returns the log records.
    """
    from tqdm import tqdm

    rank, world = dist_info()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    opt = make_optimizer(model, lr, weight_decay)
    start = 0
    if resume:
        _, ck = load_checkpoint(resume, map_location=device, model=model)
        opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["loader"])
        torch.set_rng_state(ck["rng"]["torch"])
        if device == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        start = ck["step"]
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
            broadcast_buffers=False)
    if compile:
        net = torch.compile(net)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (device == "cuda" and bf16) else nullcontext()
    os.makedirs(out_dir, exist_ok=True)
    log = open(os.path.join(out_dir, "log.jsonl"), "a") if rank == 0 else None
    tb = None
    if tensorboard and rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        tb = SummaryWriter(os.path.join(out_dir, "tb"))
    ckpt_path = os.path.join(out_dir, "last.pt")

    def save(step):
        if rank == 0:
            save_checkpoint(ckpt_path, model, optimizer=opt.state_dict(), step=step,
                            loader=loader.state_dict(), steps=steps,
                            rng={"torch": torch.get_rng_state(),
                                 "cuda": torch.cuda.get_rng_state() if device == "cuda" else None})
        if world > 1:
            dist.barrier()

    it = iter(loader)
    records = []
    model.train()
    bar = tqdm(range(start, steps), desc="pretrain", disable=not progress or rank != 0,
               initial=start, total=steps, mininterval=1.0)
    try:
        for step in bar:
            t0 = time.perf_counter()
            for grp in opt.param_groups:
                grp["lr"] = cosine_lr(step, steps, lr, warmup, min_lr)
            sums = torch.zeros(len(LOSSES) + 1, device=device)  # the losses, samples
            for micro in range(accum):
                batch = next(it, None)
                if batch is None:  # epoch done: the loader moved to the next one
                    it = iter(loader)
                    batch = next(it)
                ft = normalize(batch["frame_t"].to(device, non_blocking=True))
                fn = normalize(batch["frame_next"].to(device, non_blocking=True))
                sync = nullcontext() if (world == 1 or micro == accum - 1) else net.no_sync()
                with sync:
                    with amp:
                        out = net(ft, fn, swap_mask=batch["swap_mask"].to(device),
                                  crop_rand=batch["crop_rand"].to(device))
                    (out["loss"] / accum).backward()
                sums += torch.stack([out[k].detach().float() for k in LOSSES]
                                    + [torch.ones((), device=device)])
            if world > 1:
                dist.all_reduce(sums)
            means = dict(zip(LOSSES, (sums[:-1] / sums[-1]).tolist()))
            loss = means["loss"]
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({loss}) at step {step}: stopping; the last "
                                    f"good checkpoint is {ckpt_path if os.path.exists(ckpt_path) else 'none'}")
            opt.step()
            opt.zero_grad(set_to_none=True)
            model.update_teacher(ema_momentum(step, steps, ema))
            rec_ = {"step": step, **means, "lr": opt.param_groups[0]["lr"],
                    "sec": time.perf_counter() - t0, "epoch": loader.epoch}
            records.append(rec_)
            if log:
                log.write(json.dumps(rec_) + "\n")
                log.flush()
            if tb:
                for k in LOSSES + ("lr",):
                    tb.add_scalar(k, rec_[k], step)
            bar.set_postfix(loss=f"{loss:.4f}", rec=f"{means['rec_loss']:.4f}")
            done = step + 1
            if done % ckpt_every == 0 or done == steps or (stop_after and done == stop_after):
                save(done)
            if stop_after and done >= stop_after:
                break
    finally:
        if log:
            log.close()
        if tb:
            tb.close()
    return records
