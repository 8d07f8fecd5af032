"""Configuration of μ-BERT: one dataclass and the named configs (``model.create_model`` builds them)."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional, Tuple, Union


@dataclass
class MicronBERTConfig:
    # μ-Encoder (a ViT with a contextual token)
    img_size: Union[int, Tuple[int, int]] = 224
    patch_size: int = 8
    in_chans: int = 3
    embed_dim: int = 512
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    # μ-Decoder
    has_decoder: bool = True
    decoder_embed_dim: int = 512
    decoder_depth: int = 4
    decoder_num_heads: int = 4
    norm_pix_loss: bool = False
    # Diagonal Micro-Attention
    dma_heads: int = 1
    dma_role: str = "paper"  # "paper": Q from P_{t+d}, K,V from P_{t/s}; "official": Q,V from P_{t/s}, K from P_{t+d}
    diag_att: bool = True  # False: the authors' full cross-attention (their released checkpoint)
    # Patch of Interest
    poi_mask: str = "gate"  # "none" | "gate" | "soft" | "hard" (soft/hard include the gate)
    poi_quantile: float = 0.25  # hard mask: keys below this score quantile are masked
    poi_detach: bool = True  # PoI scores steer DMA without taking its gradient
    poi_loss: str = "dino"  # "dino" | "mse" | "none"
    dino_out_dim: int = 128
    dino_hidden_dim: int = 2048
    dino_bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    crop_scale: Tuple[float, float] = (0.4, 1.0)
    mse_var_weight: float = 1.0  # mse PoI loss: weight of the variance hinge against collapse
    # blockwise swapping
    mask_type: str = "block"  # "block" | "random"
    swap_ratio: float = 0.5
    # loss weights: L = L_rec + lambda_poi * L_poi + lambda_diag * smoothL1(D, M)
    lambda_poi: float = 1.0
    lambda_diag: float = 0.0
    # authors' auxiliary head (fc.*)
    aux_cls: bool = False
    # uint8 frames are scaled to [0, 1], then normalised by these (ImageNet's, as the authors)
    pixel_mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: Tuple[float, float, float] = (0.229, 0.224, 0.225)

    # ---- extensions, not in the paper (micronbert/variants.py); the defaults are the paper's
    # score scale of DMA (None: head_dim ** -0.5, the paper's)
    dma_scale: Optional[float] = None
    # a null key per query (kernels/dma.py) makes D an absolute match test, not a relative one
    dma_null_key: bool = False
    # "identity" starts to_q and to_k as the identity: DMA compares the tokens from step 0
    dma_init: str = "xavier"  # "xavier" | "identity"
    # target of the diagonal loss: "swap" = the swap mask M (the paper); "match" = 1 wherever
    # the key patch shows what the query patch shows (swapped, or unchanged within diag_tol),
    # 0 where they differ by diag_change or more, left out in between (variants.py)
    diag_target: str = "swap"
    diag_tol: float = 0.02
    diag_change: Optional[float] = None  # None: diag_tol (nothing left out)

    def __post_init__(self):
        if isinstance(self.img_size, numbers.Integral):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(self.img_size)
        self._check_sizes()
        self.crop_scale = tuple(self.crop_scale)
        self.pixel_mean, self.pixel_std = tuple(self.pixel_mean), tuple(self.pixel_std)
        if len(self.pixel_mean) != self.in_chans or len(self.pixel_std) != self.in_chans:
            raise ValueError(f"pixel_mean and pixel_std need one value per channel ({self.in_chans})")
        h, w = self.img_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads or self.embed_dim % self.dma_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads "
                             f"({self.num_heads}) and dma_heads ({self.dma_heads})")
        if self.has_decoder and self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(f"decoder_embed_dim ({self.decoder_embed_dim}) must be divisible by "
                             f"decoder_num_heads ({self.decoder_num_heads})")
        choices = {"dma_role": ("paper", "official"), "poi_mask": ("none", "gate", "soft", "hard"),
                   "poi_loss": ("dino", "mse", "none"), "mask_type": ("block", "random"),
                   "diag_target": ("swap", "match"), "dma_init": ("xavier", "identity")}
        if self.diag_change is not None and self.diag_change < self.diag_tol:
            raise ValueError(f"diag_change ({self.diag_change}) must be >= diag_tol ({self.diag_tol})")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    # sizes: integers >= 1 (decoder_depth >= 0); rates and scales: finite and positive
    _POSITIVE_INTS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
                      "decoder_num_heads", "dma_heads", "dino_out_dim", "dino_hidden_dim",
                      "dino_bottleneck_dim")
    _POSITIVE_FLOATS = ("mlp_ratio", "norm_eps", "student_temp", "teacher_temp")

    def _check_sizes(self):
        """Sizes are positive integers (NumPy integers are taken as ints), so that no bad
        value reaches a division: each failure names the field."""
        def whole(name, v, low):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
            return int(v)
        if len(self.img_size) != 2:
            raise ValueError(f"img_size must be an int or (height, width), got {self.img_size!r}")
        self.img_size = tuple(whole("img_size", s, 1) for s in self.img_size)
        for name in self._POSITIVE_INTS:
            setattr(self, name, whole(name, getattr(self, name), 1))
        self.decoder_depth = whole("decoder_depth", self.decoder_depth, 0)
        for name in self._POSITIVE_FLOATS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("swap_ratio", "poi_quantile", "center_momentum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self):
        return asdict(self)

    def extensions(self) -> dict:
        """The fields set away from the paper's method (empty for the paper's μ-BERT)."""
        base = MicronBERTConfig()
        return {k: getattr(self, k) for k in EXTENSION_FIELDS if getattr(self, k) != getattr(base, k)}


# fields the paper does not have (grouped last in the dataclass)
EXTENSION_FIELDS = ("dma_scale", "dma_null_key", "dma_init", "diag_target", "diag_tol", "diag_change")


CONFIGS = {
    # the authors' released architecture (mae_vit_small_patch8)
    "micronbert_s8": MicronBERTConfig(),
    # small enough for CPU tests and the demo
    "micronbert_tiny": MicronBERTConfig(
        img_size=64, patch_size=8, embed_dim=128, depth=2, num_heads=4,
        decoder_embed_dim=128, decoder_depth=1, decoder_num_heads=4,
        dino_out_dim=64, dino_hidden_dim=256, dino_bottleneck_dim=64),
}
# our variant, opt-in (README, bench/results/cpu-x86_64-2cores/demo): DMA as an absolute
# matcher (null key, identity-initialised q/k, a sharp scale) trained with the "match"
# diagonal target with a band left out. Not the paper's μ-BERT.
CONFIGS["micronbert_tiny_nullkey"] = replace(
    CONFIGS["micronbert_tiny"], lambda_diag=1.0, diag_target="match", diag_tol=0.01,
    diag_change=0.05, dma_null_key=True, dma_init="identity", dma_scale=2.34)


def get_config(name: str, **overrides) -> MicronBERTConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(CONFIGS)}")
    if "fused" in overrides:
        raise TypeError("'fused' is no longer a config field: pass backend='reference' "
                        "(or 'auto', 'torch', 'triton') to create_model / MicronBERT")
    known = {f.name for f in fields(MicronBERTConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise TypeError(f"unknown config fields {bad}")
    return replace(CONFIGS[name], **overrides)
