"""How much memory a pre-training step needs, estimated before step 0, and a guard that
refuses a run that cannot fit (``micronbert pretrain``; ``--no-memory-check`` bypasses).

The estimate (bytes) is runtime + parameters + gradients + AdamW state + activations:

    runtime:      RUNTIME_BYTES (thread pools, autograd's first-call buffers, the allocator's slack)
    params:       4 B per parameter (fp32), + 4 (gradient) + 8 (AdamW's two moments) per
                  trainable one (the EMA teacher is frozen: 4 B only)
    activations:  B * e * [ V * depth * blk(T, D, r, H)           encoder, V views per sample
                            + dec_depth * blk(T, D_dec, r, H_dec)  decoder
                            + 2 * dma_heads * N^2                  DMA scores and weights
                            + PIXEL_ELEMS * C * H * W ]            frames, patches, targets, crop
    blk(T, D, r, H) = T*D*(10 + 2r) [+ 2*H*T^2 where attention is materialised: backend
                      "reference"; SDPA/xformers keep no T x T matrix]

T = N + 1 tokens, B the micro-batch (``--batch``; ``--accum`` does not change it), e the
bytes per activation element (``activation_elem_bytes``: 4 in fp32; under bf16 autocast also
4 on a CPU, where autocast keeps fp32 copies beside the bf16 ones, so that the guard never
reads under a measured peak, and 2 on CUDA, an approximation not measured), V = 3 views
(swapped, later, PoI crop) when the PoI loss is on, else 2 (the crop's CT-only pass keeps
one row in its last block; counted in full, so the estimate stays an upper bound). PIXEL_ELEMS, RUNTIME_BYTES and the CPU's bf16 e are calibrated on peak RSS measured
by ``bench/bench_memory.py`` (its table: bench/results/cpu-x86_64-2cores/memory.md and
docs/method.md, "Memory of a training step"): the estimate is at or above every measured
peak there, by at most 11 % in fp32 and 25 % in bf16.
"""
from __future__ import annotations

import os
import sys

# calibrated on peak RSS of training steps on a 2-core CPU (torch 2.13, backend auto and
# reference, fp32 and bf16 autocast): micronbert_tiny at batch 8/32/64 and micronbert_s8 at
# batch 1/2, measured by bench/bench_memory.py (bench/results/cpu-x86_64-2cores/memory.md);
# its --fit gave other values in three runs (RUNTIME 198 / 217 / 216 MiB, PIXEL 34 / 19 / 22: a
# peak varies by up to ~45 MiB run to run), each with a larger worst-row error than these
PIXEL_ELEMS = 37
RUNTIME_BYTES = 192 * 2 ** 20
# bytes per activation element under bf16 autocast on a CPU: autocast makes the matmul-like
# ops' outputs bf16, the other ops' stay fp32, so the saved activations are a mix. 3 put every
# bf16 row of bench/bench_memory.py within -10% .. +12%, but under the peak for micronbert_s8
# (0.91): a run the guard passes could then not fit. 4 overestimates the bf16 rows by up to
# ~24% and is never under: the guard's error is on the side of refusing (--no-memory-check).
CPU_BF16_ELEM_BYTES = 4


def _block_elems(tokens: int, dim: int, mlp_ratio: float, heads: int, materialised: bool) -> float:
    return tokens * dim * (10 + 2 * mlp_ratio) + (2 * heads * tokens * tokens if materialised else 0)


def parameter_bytes(model) -> int:
    """fp32 weights, plus gradient and AdamW's two moments for each trainable weight."""
    return sum(p.numel() * (16 if p.requires_grad else 4) for p in model.parameters())


def activation_bytes(cfg, batch: int, elem_bytes: int = 4, materialised_attention: bool = False) -> float:
    """Activations kept for the backward of one micro-batch of ``batch`` pairs."""
    n = cfg.num_patches
    t = n + 1
    views = 3 if cfg.poi_loss != "none" and cfg.lambda_poi > 0 else 2
    m = materialised_attention
    per = views * cfg.depth * _block_elems(t, cfg.embed_dim, cfg.mlp_ratio, cfg.num_heads, m)
    if cfg.has_decoder:
        per += cfg.decoder_depth * _block_elems(t, cfg.decoder_embed_dim, cfg.mlp_ratio,
                                                cfg.decoder_num_heads, m)
    per += 2 * cfg.dma_heads * n * n
    per += PIXEL_ELEMS * cfg.in_chans * cfg.img_size[0] * cfg.img_size[1]
    return batch * elem_bytes * per


def activation_elem_bytes(device, precision: str) -> int:
    """Bytes per activation element the guard assumes for a run in ``precision`` (the resolved
    "fp32" | "bf16") on ``device``: 4 in fp32; under bf16 autocast 2 on CUDA and
    CPU_BF16_ELEM_BYTES on a CPU."""
    import torch
    if precision != "bf16":
        return 4
    return 2 if torch.device(device).type == "cuda" else CPU_BF16_ELEM_BYTES


def estimate_training_bytes(model, batch: int, elem_bytes: int = 4) -> int:
    """Runtime, parameters, gradients, AdamW state and activations of a training step."""
    mat = getattr(model, "backend", "auto") == "reference"
    return int(RUNTIME_BYTES + parameter_bytes(model)
               + activation_bytes(model.config, batch, elem_bytes, mat))


def available_bytes(device) -> tuple:
    """(free bytes, where) on ``device``: torch.cuda.mem_get_info on CUDA, else the
    system's available memory (psutil when installed, else /proc/meminfo's MemAvailable).
    (None, where) when it cannot be read."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {torch.cuda.get_device_name(device)}"
    try:
        import psutil
        return psutil.virtual_memory().available, "available RAM"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available RAM (/proc/meminfo)"
    except OSError:
        pass
    return None, "unknown"


def _gb(x) -> str:
    return f"{x / 2 ** 30:.1f} GB"


# bytes per pixel of one frame while spotting: the uint8 frame, its crop, the tail copy, and
# each scorer's resized crop with its float copies (resize_u8); measured: --flow-size 5000
# at 30 frames per chunk used ~24 GB
SPOT_FRAME_BYTES = 3 * 4
SPOT_CROP_BYTES = 3 * (1 + 4 + 4) + 2 * 4  # (+ the grey float pair of the flow)


def spot_bytes(window: int, frame_hw=(0, 0), crop_sizes=()) -> int:
    """An estimate of spot's memory for one chunk of ``window`` frames of ``frame_hw``
    pixels, each scorer's crops ``crop_sizes`` (side, pixels) beside them."""
    h, w = frame_hw
    return int(RUNTIME_BYTES + window * (h * w * SPOT_FRAME_BYTES
                                         + sum(s * s * SPOT_CROP_BYTES for s in crop_sizes)))


def synth_bytes(frames: int, size: int, float_frames: int) -> int:
    """An estimate of synth's memory for one clip or video of ``frames`` uint8 frames of
    ``size``² pixels, ``float_frames`` of them rendered at once in float32 (with two warps)."""
    return int(RUNTIME_BYTES + size * size * 3 * (frames + float_frames * 4 * 3))


def check_bytes(need: int, what: str, lower: str, available=None) -> None:
    """Refuse (MemoryError) ``what`` when its estimate ``need`` exceeds the available memory
    (``available``, default: the CPU's, measured); ``lower``: how to lower it."""
    where = "available RAM"
    if available is None:
        available, where = available_bytes("cpu")
    if available is not None and need > available:
        raise MemoryError(f"{what} needs about {_gb(need)}, but only {_gb(available)} is {where}; "
                          f"{lower}")


def check_fits(model, batch: int, device, elem_bytes: int = 4, model_name: str = None,
               available=None, where: str = "free", log=None) -> int:
    """Refuse (MemoryError with the estimate, the free memory and the flags that lower it)
    when a training step of ``model`` at micro-batch ``batch`` cannot fit; returns the
    estimate. ``available`` (bytes, described by ``where``) overrides the measured free memory.
    ``log``: where the estimate is printed (None: sys.stderr as it is at the call)."""
    log = log or sys.stderr
    need = estimate_training_bytes(model, batch, elem_bytes)
    if available is None:
        available, where = available_bytes(device)
    if available is None:
        print(f"[pretrain] memory estimate {_gb(need)}; free memory unknown, not checked", file=log)
        return need
    if need > available:
        fixed = RUNTIME_BYTES + parameter_bytes(model)
        fit = int((available - fixed) // ((need - fixed) / batch))
        acc = -(-batch // fit) if fit >= 1 else None
        hints = [f"--batch {-(-batch // acc)} --accum {acc} (the same {batch} pairs per step)"
                 if acc else "a smaller --batch"]
        if model_name and model_name != "micronbert_tiny":
            hints.append("--model micronbert_tiny (64 px, for CPUs)")
        raise MemoryError(
            f"pretrain: a step of {model_name or 'this model'} at --batch {batch} needs about "
            f"{_gb(need)} (weights + AdamW {_gb(parameter_bytes(model))}, activations "
            f"{_gb(need - parameter_bytes(model) - RUNTIME_BYTES)}), but only {_gb(available)} is {where}. "
            f"Lower it with {' or '.join(hints)}; --no-memory-check runs anyway.")
    print(f"[pretrain] memory estimate {_gb(need)} of {_gb(available)} {where}", file=log)
    return need


if __name__ == "__main__":  # python -m micronbert.memory MODEL BATCH: print the estimate
    from .model import create_model
    name, b = sys.argv[1], int(sys.argv[2])
    m = create_model(name)
    print(f"{name} batch {b}: {_gb(estimate_training_bytes(m, b))} "
          f"(params {_gb(parameter_bytes(m))}); {os.cpu_count()} CPUs")
