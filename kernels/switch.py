"""One switch between the fused path and the readable reference path.

``use_fused()`` is True unless ``set_fused(False)`` was called or the
environment sets ``MICRONBERT_FUSED=0``. Nothing here touches CUDA.
"""
import os

_FUSED = None


def set_fused(enabled: bool) -> None:
    """Select fused kernels (True) or the plain PyTorch reference path (False)."""
    global _FUSED
    _FUSED = bool(enabled)


def use_fused() -> bool:
    if _FUSED is not None:
        return _FUSED
    return os.environ.get("MICRONBERT_FUSED", "1").lower() not in ("0", "false", "no", "off")
