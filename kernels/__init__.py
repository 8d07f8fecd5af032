"""Fused ops of μ-BERT, importable as ``micronbert.kernels``.

They know nothing of μ-BERT and import only torch (and triton, lazily, when a
fused kernel is asked for): usable as drop-in modules in any vision transformer.
Nothing here touches CUDA or autotuning at import time.
"""
import sys as _sys

# One copy per process. This folder is installed as micronbert.kernels, but with the repository
# root on sys.path (``python -m pytest`` run there) it is also importable as a top-level
# ``kernels``, and transformers imports any ``kernels`` it finds (is_kernels_available(), when a
# model is built). Run a second time, dma.py and swap.py would register the micronbert::
# operators again: torch then destroys the first registration, and the operator objects that
# micronbert.kernels calls keep a handle to the freed dispatcher entry (an eager call then dies
# with std::bad_alloc or a segfault, or works, depending on the heap). Under any other name this
# package therefore hands out micronbert.kernels and its modules.
if __name__ != "micronbert.kernels":
    try:
        import micronbert.kernels  # noqa: F401
    except ImportError:  # micronbert not installed: this copy is the only one
        pass
    if "micronbert.kernels" in _sys.modules:
        for _name, _mod in list(_sys.modules.items()):
            if _name == "micronbert.kernels" or _name.startswith("micronbert.kernels."):
                _sys.modules[__name__ + _name[len("micronbert.kernels"):]] = _mod

from .backend import BACKENDS, check_backend, resolve_backend, triton_unavailable_reason
from .dma import (POI_MODES, DiagonalMicroAttention, diagonal_micro_attention, dma_ref,
                  full_cross_attention, poi_score_masking)
from .masking import block_swap_mask, generate_swap_mask, random_swap_mask
from .swap import blockwise_swap_patches, patchify, swap_patches_ref, swap_tokens, unpatchify

__all__ = [
    "BACKENDS", "check_backend", "resolve_backend", "POI_MODES", "DiagonalMicroAttention", "diagonal_micro_attention", "dma_ref",
    "full_cross_attention", "poi_score_masking", "triton_unavailable_reason",
    "block_swap_mask", "generate_swap_mask", "random_swap_mask",
    "blockwise_swap_patches", "patchify", "swap_patches_ref", "swap_tokens", "unpatchify",
]
