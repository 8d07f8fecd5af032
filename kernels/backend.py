"""Which path runs an op: the backend names and one rule that resolves them (fused ops,
a model's attention), and the precision of a run (``resolve_precision``, ``precision``).

No global state: a caller passes ``backend=`` to every op (a model resolves it once, at
construction, and hands it down). Nothing here touches CUDA at import time.

    "reference"  the readable PyTorch spec of each op (builds what the math says)
    "torch"      memory-lean PyTorch (DMA: rows in chunks; swap: the reference)
    "triton"     the fused Triton kernels: CUDA tensors, or CPU tensors under
                 TRITON_INTERPRET=1; asking for it where it cannot run raises, saying why
    "auto"       the best path that can run on the given tensors: "triton" on CUDA when
                 Triton can run; on the CPU the faster of "reference" and "torch" by size
                 (bench/bench_dma.py: the reference is faster while its N x N scores are
                 small, the chunked path bounds the memory beyond)
"""
from __future__ import annotations

import functools
import importlib
import operator
import os
from typing import Optional

import torch

BACKENDS = ("auto", "triton", "torch", "reference")
# on the CPU, "auto" uses the reference while its score matrix (B*H*N*N fp32) stays below this
CPU_REFERENCE_MAX_BYTES = 256 << 20


def check_backend(backend: str) -> str:
    """``backend`` if it is a known name, else a ValueError that lists them."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def positive_int(value, name: str) -> int:
    """``value`` as a positive Python int: any integer (NumPy, a 0-d torch tensor) goes, a
    float or a bool is a TypeError naming ``name``, zero or less a ValueError."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def triton_unavailable_reason(t: Optional[torch.Tensor] = None, device=None) -> Optional[str]:
    """Why the Triton kernels cannot run on tensor ``t`` (or on ``device``); None when they can."""
    try:
        importlib.import_module("triton")
    except Exception as e:  # not installed, or broken
        return f"triton is not importable ({type(e).__name__}: {e}); pip install triton"
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    dev = torch.device(device) if t is None else t.device
    if dev.type == "cuda":
        if interpret:
            return "TRITON_INTERPRET=1 is set, which runs kernels on CPU tensors only"
        return None
    if interpret:
        return None
    return (f"the tensors are on {dev.type}, and Triton needs CUDA tensors "
            "(or TRITON_INTERPRET=1, set before triton is imported, for CPU tensors)")


def resolve_backend(backend: str, t: torch.Tensor, op: str, score_bytes: int = 0) -> str:
    """The concrete backend ("triton" | "torch" | "reference") of ``op`` on tensor ``t``.

    Args:
        backend: one of BACKENDS. t: a tensor of the call (its device decides).
        op: the op's name, for error messages. score_bytes: size of the reference
            path's largest intermediate (DMA: its N x N scores), for "auto" on the CPU.
    """
    check_backend(backend)
    if backend == "auto":
        if t.is_cuda and triton_unavailable_reason(t) is None:
            return "triton"
        if t.is_cuda:
            return "torch"
        return "reference" if score_bytes <= CPU_REFERENCE_MAX_BYTES else "torch"
    if backend == "triton":
        why = triton_unavailable_reason(t)
        if why is not None:
            raise RuntimeError(f"{op} backend='triton' cannot run: {why}")
    return backend


def check_buildable(backend: str, who: str = "MicronBERT") -> str:
    """A known backend name; "triton" only where Triton can run at all (CUDA, or the
    interpreter), so a model that cannot have the fused path says why when it is built."""
    check_backend(backend)
    if backend == "triton":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        why = triton_unavailable_reason(device=dev)
        if why is not None:
            raise RuntimeError(f"{who}(backend='triton') cannot run here: {why}")
    return backend


@functools.lru_cache(maxsize=None)
def xformers_ops():
    """``xformers.ops`` where it imports, else None (looked up once)."""
    try:
        import xformers.ops as xops
        return xops
    except Exception:
        return None


def attention_route(backend: str, t: torch.Tensor) -> str:
    """The path of a transformer block's self-attention on tensor ``t`` (its q, k, v): "xformers"
    (CUDA, "auto" or "triton", where xformers is installed), "reference" (the authors'
    softmax(QK^T * scale)V) for "reference", "explicit" (softmax((Q * scale)K^T)V: the same
    product with the scale on Q, d/N of the multiplies) for "auto" on bf16 CPU tensors that
    autograd records (training; SDPA stays faster for inference), else "sdpa"
    (``F.scaled_dot_product_attention``)."""
    if backend in ("auto", "triton") and t.is_cuda and xformers_ops() is not None:
        return "xformers"
    if backend == "auto" and t.device.type == "cpu" and t.dtype == torch.bfloat16 and t.requires_grad:
        return "explicit"  # training in bf16 on the CPU: faster than SDPA's backward (bench_cpu_route)
    return "reference" if backend == "reference" else "sdpa"


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively, as torch reports it (AMX
    tiles or AVX512-BF16, through oneDNN); False where torch cannot tell."""
    cpu = getattr(torch, "cpu", None)
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(which="auto", device="cpu") -> str:
    """The concrete precision ("fp32" | "bf16") of a run on ``device``.

    Args:
        which: one of PRECISIONS; ``True``/``False`` (the old ``bf16=`` switch) mean "auto"/"fp32".
            "auto": bf16 autocast on CUDA and on CPUs with native bf16 matrix units
            (``cpu_has_native_bf16``), fp32 elsewhere.
        device: where the run computes.
    """
    if isinstance(which, bool):
        which = "auto" if which else "fp32"
    if which not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {which!r}")
    if which != "auto":
        return which
    kind = torch.device(device).type
    return "bf16" if kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16()) else "fp32"


def precision(device, bf16="auto"):
    """The autocast context of a run on ``device``: bf16 autocast where ``resolve_precision``
    says bf16, else none (fp32). Weights, optimiser state and checkpoints stay fp32. The one
    place where training, fine-tuning, evaluation and spotting choose it.

    Args:
        device: where the run computes. bf16: "auto" | "fp32" | "bf16", or the old switch
            (True = "auto", False = "fp32").
    """
    import contextlib
    if resolve_precision(bf16, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
