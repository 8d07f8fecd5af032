"""Loader throughput: the loader that `micronbert pretrain` runs, with prefetch on and off,
next to the pairs/s that a micronbert_s8 training step consumes on the same machine.

    python bench/bench_loader.py [pretrain flags: --batch 64 --workers 2 --prefetch 2 --face-cache DIR ...]
                                 [--data DIR] [--size 256] [--batches 12] [--repeats 2]

The loader is built by `micronbert.data.loaders.pretrain_loader` from the CLI's own pretrain
flags and defaults (this parser is the CLI's), so what is timed is what the CLI constructs.
Rows: the synchronous loader (1 thread, no prefetch), the CLI's --workers without prefetch,
and the CLI's loader (--workers, --prefetch), each with an idle consumer (the loader's own
throughput) and with a consumer busy for as long as a synchronous batch takes (as if it
waited on a GPU step: prefetch should hide the loading); the best of --repeats runs of
--batches batches, round robin over the rows (one loader per row, continuing). images/s
counts pairs, as bench_train does. With DALI importable (and no --no-dali), the same rows with
--dali (its default device); where DALI is missing or fails to load (the GPU image has none),
its rows are skipped with a line saying so. Rows are written as each group is measured.
Data: --data, or a synthetic set (JPEG frame folders, CASME II layout) written at --size px.
Writes bench/results/<device>/bench_loader.{csv,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import Table, time_ms  # noqa: E402
from micronbert.cli.commands import loader_flags  # noqa: E402
from micronbert.cli.parser import train_flags  # noqa: E402
from micronbert.config import get_config  # noqa: E402
from micronbert.data import write_synthetic_dataset  # noqa: E402
from micronbert.data.loaders import pretrain_loader  # noqa: E402
from micronbert.data.pairs import find_clips  # noqa: E402


def batches_per_s(loader, batches: int, busy_s: float = 0.0) -> float:
    """Batches drawn per second as ``train`` draws them (a new iterator after each epoch),
    the consumer busy ``busy_s`` per batch (sleeping, as it does while a GPU step runs)."""
    it = iter(loader)
    next(it)  # pools and pipelines made, the first clips decoded
    t = time.perf_counter()
    for _ in range(batches):
        b = next(it, None)
        if b is None:
            it = iter(loader)
            b = next(it)
        assert len(b["index"]) == loader.batch_size
        time.sleep(busy_s)
    return batches / (time.perf_counter() - t)


def best_rates(loaders: dict, args, busy_ms: float) -> dict:
    """Batches/s of each loader, the best of --repeats timings taken round robin (so that
    load on the machine hits every loader alike)."""
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(args.repeats):
        for v, loader in loaders.items():
            best[v] = max(best[v], batches_per_s(loader, args.batches, busy_ms / 1e3))
    return best


def loader_rows(args, cfg, table) -> None:
    """The synchronous loader, --workers alone, and the CLI's loader (--workers, --prefetch):
    with an idle consumer, then one busy for as long as a synchronous batch takes."""
    flags = lambda w, k: argparse.Namespace(**{**vars(args), "workers": w, "prefetch": k})  # noqa: E731
    variants = dict.fromkeys([(1, 0), (args.workers, 0), (args.workers, args.prefetch)])
    loaders = {v: pretrain_loader(find_clips(args.data), cfg, **loader_flags(flags(*v))) for v in variants}
    busy_ms = 0.0
    for _ in ("idle", "busy"):
        rates = best_rates(loaders, args, busy_ms)
        for (workers, prefetch), loader in loaders.items():
            rate = rates[(workers, prefetch)]
            table.add({"route": type(loader).__name__ + (f" ({loader.device})" if args.dali else ""),
                       "workers": workers, "prefetch": prefetch, "cache_clips": loader.cache_clips,
                       "pinned": loader.pin_memory, "consumer_ms": busy_ms, "batch": args.batch,
                       "px": cfg.img_size[0], "batches_per_s": rate, "images_per_s": rate * args.batch})
            print(table.rows[-1], flush=True)
        busy_ms = 1e3 / rates[(1, 0)]  # next: a consumer busy as long as a synchronous batch


def step_row(args, device: str) -> dict:
    """What a micronbert_s8 training step consumes (bf16 on CUDA; B=2 on a CPU)."""
    from micronbert import create_model
    from micronbert.kernels import random_swap_mask
    from micronbert.train import make_optimizer
    b = args.batch if device == "cuda" else 2
    model = create_model(args.model).to(device).train()
    opt = make_optimizer(model, 1e-4)
    size, n = model.config.img_size[0], model.config.img_size[0] // model.config.patch_size
    x = torch.randn(b, 3, size, size, device=device)
    mask = random_swap_mask(b, n, 0.5, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with amp:
            loss = model(x, x + 0.01, swap_mask=mask)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    ms = time_ms(step, device, warmup=1, reps=2)
    return {"route": f"{args.model} training step consumes", "workers": None, "prefetch": None,
            "cache_clips": None, "pinned": None, "consumer_ms": ms, "batch": b, "px": size,
            "batches_per_s": 1e3 / ms, "images_per_s": b / ms * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in train_flags():  # the CLI's pretrain flags and defaults (--batch, --workers, --dali, ...)
        flag.add_to(ap)
    ap.add_argument("--data", default=None, help="clips (default: a synthetic set at --size px)")
    ap.add_argument("--model", default="micronbert_s8", help="named config (image size, patches, masks)")
    ap.add_argument("--size", type=int, default=256,
                    help="frame size of the synthetic set (resized to the model's, as real face crops are)")
    ap.add_argument("--batches", type=int, default=12, help="batches timed per row")
    ap.add_argument("--repeats", type=int, default=2, help="timings per row (the best is kept)")
    ap.add_argument("--no-step", action="store_true", help="do not time the training step")
    ap.add_argument("--no-dali", action="store_true", help="do not measure the --dali loader")
    ap.add_argument("--subjects", type=int, default=4, help="subjects of the synthetic set")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = get_config(args.model)
    table = Table("bench_loader", device)
    with tempfile.TemporaryDirectory() as d:
        if args.data is None:
            args.data = write_synthetic_dataset(d, n_subjects=args.subjects, clips_per_class=2,
                                                size=args.size, progress=False)
        loader_rows(argparse.Namespace(**{**vars(args), "dali": False}), cfg, table)
        why = "--no-dali" if args.no_dali else dali_missing()
        if why:
            print(f"the --dali loader is not measured: {why}")
            table.note(f"the --dali loader is not measured: {why}")
        else:
            loader_rows(argparse.Namespace(**{**vars(args), "dali": True}), cfg, table)
    if not args.no_step:
        table.add(step_row(args, device))
    table.finish()


def dali_missing():
    """None where DALI loads, else why not (missing, or failing to load: the GPU image)."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (e.g. its CUDA libraries)
        return f"DALI cannot be imported ({type(e).__name__}: {e})"
    return None


if __name__ == "__main__":
    main()
