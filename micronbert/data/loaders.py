"""The pre-training loader factory: ``PairLoader`` or ``DaliPairLoader`` sized by the
model's config (``micronbert pretrain``, ``demo`` and bench_loader build it here)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from .dali import DaliPairLoader
from .pairs import PairLoader


def pretrain_loader(clips: Sequence[str], config, batch: int = 64, delta: Tuple[int, int] = (1, 4),
                    seed: int = 0, rank: int = 0, world: int = 1, samples_per_epoch: Optional[int] = None,
                    on_error: str = "raise", face_cache: Optional[str] = None, dali: bool = False,
                    workers: int = 2, prefetch: int = 2) -> PairLoader:
    """The loader of pre-training (``micronbert pretrain`` and ``demo``), sized by the model's config.

    Args:
        clips: the clips to sample pairs from (``find_clips(folder)``).
        config: the model's ``MicronBERTConfig`` (image and patch size, mask type, swap ratio).
        batch, delta, seed, samples_per_epoch, on_error, face_cache, workers, prefetch: as
            PairLoader's; ``dali``: a DaliPairLoader.
        rank, world: this process and the number of processes.

    ``bench/bench_loader.py`` measures this very loader.
    """
    kind = DaliPairLoader if dali else PairLoader
    return kind(clips, config.img_size[0], batch, config.patch_size, tuple(delta), seed, rank, world,
                config.mask_type, config.swap_ratio, samples_per_epoch, on_error, face_cache=face_cache,
                workers=workers, prefetch=prefetch)
