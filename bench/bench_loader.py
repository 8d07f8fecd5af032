"""Loader throughput: pairs/s of the CPU loader (1 and 2 decoding threads, no clip cache:
two frames decoded per pair) and of the DALI pipeline (CPU here, GPU when there is one),
next to the pairs/s that a micronbert_s8 training step consumes on the same machine.

    python bench/bench_loader.py [--size 224] [--batch 16]

Data: a synthetic set written on the fly (JPEG frame folders, CASME II layout) at --size px.
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

from common import time_ms, write_table  # noqa: E402
from micronbert.data import DaliPairLoader, PairLoader, find_clips, write_synthetic_dataset  # noqa: E402


def pairs_per_s(loader, batches):
    it = iter(loader)
    next(it)  # build pipelines, open pools
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it, None)
        if b is None:
            it = iter(loader)
            b = next(it)
        n += len(b["index"])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        write_synthetic_dataset(d, n_subjects=4, clips_per_class=2, size=args.size, progress=False)
        clips = find_clips(d)
        kw = dict(size=args.size, batch_size=args.batch, samples_per_epoch=args.batch * (args.batches + 2))
        routes = {"cpu_loader_1_thread": PairLoader(clips, cache_clips=0, workers=1, **kw),
                  "cpu_loader_2_threads": PairLoader(clips, cache_clips=0, workers=2, **kw)}
        try:
            routes["dali_cpu"] = DaliPairLoader(clips, device="cpu", num_threads=2, **kw)
            if device == "cuda":
                routes["dali_gpu"] = DaliPairLoader(clips, device="gpu", num_threads=4, **kw)
        except ImportError as e:
            print(f"DALI not measured: {e}")
        for name, loader in routes.items():
            rows.append({"route": name, "px": args.size, "batch": args.batch,
                         "pairs_per_s": pairs_per_s(loader, args.batches)})
            print(rows[-1], flush=True)
    # what a training step consumes
    from micronbert import create_model
    from micronbert.kernels import random_swap_mask
    from micronbert.train import make_optimizer
    b = args.batch if device == "cuda" else 2
    model = create_model("micronbert_s8").to(device).train()
    opt = make_optimizer(model, 1e-4)
    x = torch.randn(b, 3, 224, 224, device=device)
    mask = random_swap_mask(b, 28, 0.5, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def step():
        with amp:
            loss = model(x, x + 0.01, swap_mask=mask)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    ms = time_ms(step, device, warmup=1, reps=2)
    rows.append({"route": f"micronbert_s8 training step consumes (B={b})", "px": 224, "batch": b,
                 "pairs_per_s": b / ms * 1e3})
    write_table("bench_loader", rows, device)


if __name__ == "__main__":
    main()
