"""SLSTT (Zhang, Hong, Arandjelović, Zhao 2021, arXiv 2112.05851) as implemented here
(docs/slstt.md): a ViT without convolutions encodes each optical-flow field (u, v,
magnitude) from the onset frame to one of T frames into its class token; an aggregator
(LSTM or mean) over the T tokens and a linear head classify the clip.

Shapes: B clips, T flow fields per clip, C = 3 channels (u, v, |(u, v)|), H = W image side,
p patch size, N = (H / p)^2 patches, D width, L the aggregator's output width.
The ViT's blocks are the project's pre-norm ``Block`` (micronbert.model) with DropPath.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from ..kernels import patchify
from ..model import Block, PatchEmbed, sincos_pos_embed

AGGREGATORS = ("lstm", "mean")


@dataclass
class SLSTTConfig:
    img_size: int = 64  # flow fields are computed on (and fed at) img_size x img_size
    patch_size: int = 16
    in_chans: int = 3  # u, v, magnitude
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    drop_path: float = 0.1  # stochastic depth rate of the last block (linear from 0)
    frames: int = 4  # T flow fields per clip, onset -> frames sampled in (onset, offset]
    aggregator: str = "lstm"  # "lstm" | "mean"
    lstm_hidden: int = 64
    flow_scale: float = 1.0  # px; the ViT sees flow / flow_scale

    def __post_init__(self):
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")

    @property
    def grid(self):
        g = self.img_size // self.patch_size
        return g, g


SLSTT_CONFIGS = {
    # the CPU's: 64 px flow (the demo's faces), 16 patches of 16 px, 2 blocks of width 64
    "slstt_tiny": SLSTTConfig(),
    # the paper's scale: ViT-B/16 at 224 px (12 blocks, width 768, 12 heads), LSTM aggregator;
    # T and the LSTM width are our choices (docs/slstt.md)
    "slstt_paper": SLSTTConfig(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                               drop_path=0.1, frames=8, lstm_hidden=512),
}


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a whole sample with probability ``p``
    in training, scale the kept ones by 1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):  # B ...
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)


class DropPathBlock(Block):
    """The project's pre-norm block with DropPath on both residual branches."""

    def __init__(self, dim, num_heads, mlp_ratio, eps, backend, drop_path: float):
        super().__init__(dim, num_heads, mlp_ratio, eps, backend)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # B N D
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FlowEncoder(nn.Module):
    """The spatial encoder: linear patch embedding, a class token, learnt positions (from
    sin-cos), DropPath blocks, a final norm; one flow field -> its class token."""

    def __init__(self, cfg: SLSTTConfig, backend: str = "auto"):
        super().__init__()
        d, p = cfg.embed_dim, cfg.patch_size
        self.patch_size = p
        self.patch_embed = PatchEmbed(p, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(sincos_pos_embed(d, cfg.grid))  # 1, 1+N, D
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(DropPathBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, backend, r)
                                    for r in rates)
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x):  # B C H W -> B D
        t = self.patch_embed(patchify(x, self.patch_size))  # B N D
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t[:, 0])


class SLSTT(nn.Module):
    """``forward(flows)``: flows (B, T, 3, H, W) in px -> logits (B, n_classes)."""

    def __init__(self, cfg: SLSTTConfig, n_classes: int, backend: str = "auto"):
        super().__init__()
        self.config, self.n_classes = cfg, n_classes
        self.encoder = FlowEncoder(cfg, backend)
        if cfg.aggregator == "lstm":
            self.lstm = nn.LSTM(cfg.embed_dim, cfg.lstm_hidden, batch_first=True)
            width = cfg.lstm_hidden
        else:
            width = cfg.embed_dim
        self.head = nn.Linear(width, n_classes)

    def frame_tokens(self, flows):  # B T C H W -> B T D
        b, t = flows.shape[:2]
        if flows.shape[2:] != (self.config.in_chans, self.config.img_size, self.config.img_size):
            raise ValueError(f"SLSTT takes flows (B, T, {self.config.in_chans}, {self.config.img_size}, "
                             f"{self.config.img_size}), got {tuple(flows.shape)}")
        z = self.encoder(flows.flatten(0, 1).float() / self.config.flow_scale)
        return z.view(b, t, -1)

    def aggregate(self, z):  # B T D -> B L
        if self.config.aggregator == "mean":
            return z.mean(1)
        _, (h, _) = self.lstm(z)  # h: 1 B L, the state after the last field
        return h[-1]

    def forward(self, flows):  # B T C H W -> B classes
        return self.head(self.aggregate(self.frame_tokens(flows)))


def get_slstt_config(name: str, **overrides) -> SLSTTConfig:
    """A named SLSTT config (``SLSTT_CONFIGS``) with field overrides, e.g. aggregator="mean"."""
    if name not in SLSTT_CONFIGS:
        raise ValueError(f"unknown SLSTT config {name!r}; known: {sorted(SLSTT_CONFIGS)}")
    return replace(SLSTT_CONFIGS[name], **{k: v for k, v in overrides.items() if v is not None})


def create_slstt(name_or_config, n_classes: int, backend: str = "auto", **overrides) -> SLSTT:
    """An SLSTT from a named config or an SLSTTConfig (``overrides``: its fields)."""
    cfg = (get_slstt_config(name_or_config, **overrides) if isinstance(name_or_config, str)
           else replace(name_or_config, **{k: v for k, v in overrides.items() if v is not None}))
    return SLSTT(cfg, n_classes, backend)
