"""Pre-training: one GPU, many, or the CPU. Short on purpose (nanoGPT/MAE style):
AdamW (fused on CUDA; apex's FusedAdam when installed), warm-up + cosine schedule,
gradient accumulation, the PoI EMA teacher, bf16 autocast on CUDA, a stop on a
non-finite loss, atomic checkpoints with exact resume (model, optimiser, schedule
position, RNG, loader position), a progress bar, JSON-lines logs, optional TensorBoard,
and DistributedDataParallel under ``torchrun`` (nccl on GPU, gloo on CPU).

The loader's uint8 frames go to the device as they are (from pinned memory, without
blocking); the model's swap kernel gathers, normalises and casts them in one pass.
Pieces, as MAE's engine_pretrain: ``setup_run`` (model, optimiser, resume, logs),
``train_step`` (one optimiser step over ``accum`` micro-batches), ``save_run`` (the
checkpoint), ``log_step``; ``train`` ties them together.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.distributed as dist

from .checkpoint import config_from_dict, load_state_dict_strict, read_checkpoint, save_checkpoint
from .kernels.backend import precision, resolve_precision
from .runs import (FREE, keep_step_copy, non_finite, run_settings, settings_diff,
                   truncate_log)


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warm-up (at most ``total`` steps long), then a cosine from ``base_lr`` to ``min_lr``."""
    warmup = min(warmup, total)
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
    # fused: one pass per tensor, on CUDA and on the CPU (torch's CPU kernel: about 2x the
    # per-parameter loop of the default on micronbert_s8, bench/results/cpu-x86_64-2cores)
    fused = all(p.dtype in (torch.float32, torch.float64) for p in decay + no_decay) and (
        cuda or all(p.device.type == "cpu" for p in decay + no_decay))
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused or None)


LOSSES = ("loss", "rec_loss", "poi_loss", "diag_loss")


class NonFiniteLoss(RuntimeError):
    """A non-finite loss or non-finite weights: the run stops, naming its last good checkpoint."""


def classifier_epoch(forward, opt, y, weight, cfg, generator, step: int, total: int, warmup: int, tag: str):
    """One epoch of a classifier's training (fine-tuning μ-BERT, SLSTT): shuffled batches of
    ``cfg.batch`` (a batch of 1 skipped), lr warm-up + cosine per step times each group's
    ``lr_scale``, class-weighted cross-entropy of ``forward(idx)`` -> logits (B, classes)
    against ``y[idx]``. Returns (step, {"loss", "train_acc"})."""
    import torch.nn.functional as F
    n = len(y)
    perm = torch.randperm(n, generator=generator).to(y.device)
    loss_sum, correct, seen = 0.0, 0, 0
    for i in range(0, n, cfg.batch):
        idx = perm[i:i + cfg.batch]
        if len(idx) < 2:
            continue
        lr = cosine_lr(step, total, cfg.lr, warmup, cfg.min_lr)
        for grp in opt.param_groups:
            grp["lr"] = lr * grp["lr_scale"]
        logits = forward(idx)
        loss = F.cross_entropy(logits, y[idx], weight=weight)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"{tag}: non-finite loss ({loss.item()}) at step {step}: "
                                f"lower --lr or use --no-bf16")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
        seen += len(idx)
    return step, {"loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen)}


class ConfigMismatch(ValueError):
    """``resume`` with settings that differ from the checkpoint's (listed)."""


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


@dataclass
class TrainConfig:
    """Hyper-parameters of a pre-training run (``train(..., **fields)``)."""
    steps: int = 1000
    lr: float = 1.5e-4
    min_lr: float = 0.0
    warmup: int = 50
    weight_decay: float = 0.05
    accum: int = 1
    ema: float = 0.996  # base momentum of the PoI EMA teacher
    ckpt_every: int = 100
    precision: str = "auto"  # auto | fp32 | bf16 (kernels.backend.resolve_precision)
    bf16: bool = True  # deprecated: False = precision "fp32"
    compile: bool = False
    tensorboard: bool = False
    stop_after: Optional[int] = None  # end early (as if killed) after this many steps
    keep: Optional[int] = None  # also keep OUT/step-<step>.pt of the last `keep` checkpoints

    def __post_init__(self):
        for name, low in (("steps", 0), ("warmup", 0), ("accum", 1), ("ckpt_every", 1),
                          ("stop_after", 1), ("keep", 1)):
            v = getattr(self, name)
            if v is None and name in ("stop_after", "keep"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")


class Run:
    """What a pre-training run holds between steps."""

    def __init__(self, model, loader, tc: TrainConfig, out_dir: str, device: str):
        self.model, self.loader, self.tc, self.out_dir, self.device = model, loader, tc, out_dir, device
        self.rank, self.world = dist_info()
        self.opt = make_optimizer(model, tc.lr, tc.weight_decay)
        self.net, self.start, self.it = model, 0, None
        self.precision = resolve_precision(tc.precision if tc.bf16 else "fp32", device)
        self.amp = precision(device, self.precision)
        self.ckpt_path = os.path.join(out_dir, "last.pt")  # the last good (confirmed) checkpoint
        # a checkpoint is saved to `pending.pt` and becomes last.pt once the step after it
        # gives a finite loss (the end of the run's is final at once): so after a divergence
        # last.pt is never the very weights whose loss was not finite
        self.pending_path = os.path.join(out_dir, "pending.pt")
        self.pending: Optional[int] = None  # the step count of pending.pt
        self.good_step: Optional[int] = None  # the step count of last.pt, when known
        self.log = self.tb = None


def schedule_change(path: str, old_steps: int, step, tc: TrainConfig) -> str:
    """The line that explains a resume with another ``--steps``: the cosine is stretched, so
    the learning rate jumps from where the old schedule left it."""
    line = f"[pretrain] {path}: steps {old_steps} -> {tc.steps}: the schedule (warm-up, cosine) is stretched"
    if not isinstance(step, int) or step < 1:
        return f"{line} from step {step}"
    was = cosine_lr(step - 1, old_steps, tc.lr, tc.warmup, tc.min_lr)
    now = cosine_lr(step, tc.steps, tc.lr, tc.warmup, tc.min_lr)
    return (f"{line}, so the learning rate goes from {was:.2g} (step {step - 1} of {old_steps}) to "
            f"{now:.2g} at step {step}: the cosine to --min-lr now ends at step {tc.steps}")


def check_resume(ck: dict, model, tc: TrainConfig, loader, path: str,
                 allow_config_change: bool = False) -> None:
    """Compare a checkpoint's model config and run settings with this run's; a difference
    that changes the math raises ConfigMismatch listing them all (unless allowed). A new
    ``steps`` is allowed: the cosine schedule is stretched from the resumed step."""
    m = getattr(model, "module", model)
    diff = [f"model.{d}" for d in settings_diff(config_from_dict(ck["config"], path).to_dict(),
                                                m.config.to_dict())]
    saved = ck.get("run") or {"steps": ck.get("steps")}
    if isinstance(ck.get("step"), int) and ck["step"] >= tc.steps:
        raise ValueError(f"{path} is at step {ck['step']}, and --steps {tc.steps} leaves nothing "
                         f"to run: pass --steps above {ck['step']} to train on")
    now = run_settings(tc, loader)
    diff += settings_diff(saved, now, free=FREE)
    if saved.get("steps") not in (None, tc.steps) and dist_info()[0] == 0:
        print(schedule_change(path, saved["steps"], ck.get("step"), tc), file=sys.stderr)
    if diff and not allow_config_change:
        raise ConfigMismatch(f"{path}: resuming with settings that differ from the checkpoint's "
                             f"({'; '.join(diff)}); give the same flags, or pass "
                             f"--allow-config-change (allow_config_change=True) to resume anyway")


def setup_run(model, loader, tc: TrainConfig, out_dir: str, resume: Optional[str] = None,
              device: Optional[str] = None, allow_config_change: bool = False) -> Run:
    """Move the model, build the optimiser, restore a checkpoint (its settings checked),
    wrap DDP / compile, open logs (on resume cut to the resumed step)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if hasattr(loader, "__len__") and len(loader) == 0:
        b, w = getattr(loader, "batch_size", "?"), getattr(loader, "world", 1)
        raise ValueError(f"the loader has no full batch per epoch: samples_per_epoch "
                         f"{getattr(loader, 'samples_per_epoch', '?')} < batch {b} x {w} process(es); "
                         f"raise --samples-per-epoch or lower --batch")
    model.to(device)
    run = Run(model, loader, tc, out_dir, device)
    if resume:
        ck = read_checkpoint(resume, map_location=device)
        check_resume(ck, model, tc, loader, resume, allow_config_change)
        load_state_dict_strict(model, ck["model"], resume)
        run.opt.load_state_dict(ck["optimizer"])
        loader.load_state_dict(ck["loader"])
        torch.set_rng_state(ck["rng"]["torch"])
        if device == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        run.start = ck["step"]
        if os.path.abspath(resume) == os.path.abspath(run.ckpt_path):
            run.good_step = run.start
    if run.world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None,
            broadcast_buffers=False)
    if tc.compile:
        run.net = torch.compile(run.net)
    os.makedirs(out_dir, exist_ok=True)
    if run.rank == 0:
        print(f"[pretrain] precision {run.precision} (asked {tc.precision if tc.bf16 else 'fp32'}, "
              f"{device}); weights and optimiser state fp32", file=sys.stderr)
        log = os.path.join(out_dir, "log.jsonl")
        if resume:  # the steps after the checkpoint are run again: their old records go
            truncate_log(log, run.start)
        run.log = open(log, "a" if resume else "w")
        if tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            run.tb = SummaryWriter(os.path.join(out_dir, "tb"))
    run.it = iter(loader)
    return run


def _next_batch(run: Run):
    batch = next(run.it, None)
    if batch is None:  # epoch done: the loader moved to the next one
        run.it = iter(run.loader)
        batch = next(run.it)
    return {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}


def train_step(run: Run, step: int) -> dict:
    """One optimiser step over ``accum`` micro-batches of uint8 frames; returns the mean
    losses. Raises NonFiniteLoss before the update, so no bad weights are written."""
    tc, device = run.tc, run.device
    for grp in run.opt.param_groups:
        grp["lr"] = cosine_lr(step, tc.steps, tc.lr, tc.warmup, tc.min_lr)
    sums = torch.zeros(len(LOSSES) + 1, device=device)  # the losses, samples
    for micro in range(tc.accum):
        batch = _next_batch(run)
        last = run.world == 1 or micro == tc.accum - 1
        with nullcontext() if last else run.net.no_sync():  # DDP: all-reduce on the last only
            with run.amp:
                out = run.net(batch["frame_t"], batch["frame_next"], swap_mask=batch["swap_mask"],
                              crop_rand=batch["crop_rand"])
            (out["loss"] / tc.accum).backward()
        sums += torch.stack([out[k].detach().float() for k in LOSSES] + [torch.ones((), device=device)])
    if run.world > 1:
        dist.all_reduce(sums)
    means = dict(zip(LOSSES, (sums[:-1] / sums[-1]).tolist()))
    if not math.isfinite(means["loss"]):
        raise NonFiniteLoss(f"non-finite loss ({means['loss']}) at step {step}: stopping; "
                            + _last_good(run))
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.model.update_teacher(ema_momentum(step, tc.steps, tc.ema))
    return means


def _last_good(run: Run) -> str:
    if not os.path.exists(run.ckpt_path):
        return ("no good checkpoint was written: start again with a lower --lr and --overwrite "
                f"(which moves this run's {os.path.join(run.out_dir, 'log.jsonl')} aside)")
    at = f" (after step {run.good_step})" if run.good_step is not None else ""
    return (f"the last good checkpoint is {run.ckpt_path}{at}: resume from it with a lower "
            f"--lr (and --allow-config-change)")


def save_run(run: Run, done: int, final: bool = False):
    """Checkpoint after ``done`` steps (rank 0 writes, atomically; the others wait).

    Every rank first checks that the weights and the optimiser state are finite
    (NonFiniteLoss if not). A ``final`` checkpoint (the run's end) becomes ``last.pt`` at
    once; any other goes to ``pending.pt`` until ``confirm`` (the next step's loss is finite).
    """
    bad = non_finite(run.model, run.opt)
    if bad:
        discard_pending(run)
        raise NonFiniteLoss(f"non-finite weights or optimiser state after step {done} "
                            f"({', '.join(bad)}): stopping; " + _last_good(run))
    if run.rank == 0:
        cuda_rng = torch.cuda.get_rng_state() if run.device == "cuda" else None
        save_checkpoint(run.ckpt_path if final else run.pending_path, run.model,
                        optimizer=run.opt.state_dict(), step=done,
                        loader=run.loader.state_dict(), steps=run.tc.steps,
                        run=run_settings(run.tc, run.loader),
                        rng={"torch": torch.get_rng_state(), "cuda": cuda_rng})
        if final:
            discard_pending(run)
            _promoted(run, done)
        else:
            run.pending = done
    if run.world > 1:
        dist.barrier()


def _promoted(run: Run, done: int):
    run.good_step = done
    keep_step_copy(run.ckpt_path, done, run.tc.keep)


def confirm(run: Run):
    """The pending checkpoint's weights gave a finite loss: it becomes ``last.pt``."""
    if run.pending is not None:
        os.replace(run.pending_path, run.ckpt_path)
        done, run.pending = run.pending, None
        _promoted(run, done)


def discard_pending(run: Run):
    if run.pending is not None and os.path.exists(run.pending_path):
        os.remove(run.pending_path)
    run.pending = None


def log_step(run: Run, step: int, means: dict, sec: float) -> dict:
    rec = {"step": step, **means, "lr": run.opt.param_groups[0]["lr"], "sec": sec,
           "epoch": run.loader.epoch, "precision": run.precision}
    if run.log:
        try:
            run.log.write(json.dumps(rec) + "\n")
            run.log.flush()
        except OSError as e:  # a full disk: name the file
            raise OSError(e.errno, e.strerror, run.log.name) from e
    if run.tb:
        for k in LOSSES + ("lr",):
            run.tb.add_scalar(k, rec[k], step)
    return rec


def train(model, loader, steps: int, out_dir: str, resume: Optional[str] = None,
          progress: bool = True, device: Optional[str] = None, allow_config_change: bool = False,
          **hparams):
    """Pre-train ``model`` on ``loader`` (a PairLoader) for ``steps`` optimiser steps.

    ``hparams`` are TrainConfig's fields. Checkpoints go to ``out_dir/last.pt`` (atomically)
    every ``ckpt_every`` steps and at the end, each verified finite and, but for the last,
    confirmed by a finite loss of the step after it; ``resume`` continues exactly from such
    a file, with the same settings unless ``allow_config_change``. ``out_dir/log.jsonl``
    holds this run's records (cut to the resumed step on resume). Returns the log records.
    """
    from tqdm import tqdm

    from .console import bar_on

    known = {f.name for f in fields(TrainConfig)}
    if set(hparams) - known:
        raise TypeError(f"unknown training settings {sorted(set(hparams) - known)}; known: {sorted(known)}")
    tc = TrainConfig(steps=steps, **hparams)
    run = setup_run(model, loader, tc, out_dir, resume, device, allow_config_change)
    records = []
    model.train()
    bar = tqdm(range(run.start, steps), desc="pretrain", disable=not bar_on(progress) or run.rank != 0,
               initial=run.start, total=steps, mininterval=1.0)
    try:
        for step in bar:
            t0 = time.perf_counter()
            means = train_step(run, step)
            if run.rank == 0:
                confirm(run)
            records.append(log_step(run, step, means, time.perf_counter() - t0))
            bar.set_postfix(loss=f"{means['loss']:.4f}", rec=f"{means['rec_loss']:.4f}")
            done = step + 1
            final = done == steps or done == tc.stop_after
            if done % tc.ckpt_every == 0 or final:
                save_run(run, done, final=final)
            if tc.stop_after and done >= tc.stop_after:
                break
    except NonFiniteLoss:
        if run.rank == 0:
            discard_pending(run)  # its own weights gave the non-finite loss
        raise
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the pending checkpoint is finite
        if run.rank == 0 and run.pending is not None:
            confirm(run)
        raise
    finally:
        bar.close()  # ends its line, so that an error message starts on a line of its own
        for f in (run.log, run.tb):
            if f:
                f.close()
    return records
