"""Fused ops of μ-BERT, importable as ``micronbert.kernels``.

They know nothing of μ-BERT and import only torch (and triton, lazily, when a
fused kernel is asked for): usable as drop-in modules in any vision transformer.
Nothing here touches CUDA or autotuning at import time.
"""
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
