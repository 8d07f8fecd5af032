"""Fused ops of μ-BERT, importable as ``micronbert.kernels``.

They know nothing of μ-BERT and import only torch (and triton, lazily, when a
fused kernel is asked for): usable as drop-in modules in any vision transformer.
Nothing here touches CUDA or autotuning at import time.
"""
from pathlib import Path as _Path

# Where the modules live. The fused ops sit in the repository's top-level ``kernels/`` folder, which
# has no ``__init__.py`` on purpose: a folder without one is at most a namespace portion, and Python
# lets any regular package of the same name win over it wherever either sits on sys.path, so the
# folder can never shadow the PyPI ``kernels`` package (which transformers imports), and this
# package is only ever reached as ``micronbert.kernels``, through ``micronbert.__path__``, so no
# top-level ``kernels`` can shadow it. In a wheel the modules are installed beside this file; in a
# source checkout (editable install, or the repository root on sys.path) they are in ../../kernels.
if not (_Path(__file__).parent / "dma.py").is_file():
    __path__.append(str(_Path(__file__).resolve().parents[2] / "kernels"))  # noqa: F821

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
