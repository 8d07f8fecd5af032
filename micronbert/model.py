"""μ-BERT in plain PyTorch (docs/method.md): μ-Encoder, blockwise swapping, DMA, PoI,
μ-Decoder and the losses. ``MicronBERT(config, backend=...)`` picks, once, the path of
attention, DMA and the swap (micronbert.kernels.backend: "auto" | "triton" | "torch" |
"reference"); the choice is not part of the config and not saved in checkpoints.
Frames come in as uint8 (B, 3, H, W) or (B, H, W, 3), which the swap kernel gathers,
scales, normalises and casts in one pass, or as already-normalised float (B, 3, H, W).

Shapes: B batch, N patches, D encoder width, p patch size, C channels.
Parameter names follow the authors' code (``backbone.*``, ``att.*``,
``decoder_*``, ``teacher.*``) so their checkpoints map one to one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import variants
from .augment import random_resized_crop
from .config import MicronBERTConfig, get_config
from .losses import DINOLoss, poi_mse_loss, reconstruction_loss, swap_diag_loss
from .kernels import DiagonalMicroAttention, blockwise_swap_patches, generate_swap_mask, patchify, unpatchify
from .kernels.backend import attention_route, check_buildable, xformers_ops


def sincos_pos_embed(dim: int, grid) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos embedding, (1 + gh*gw, dim), first row (the CT's) zero."""
    gh, gw = grid
    gy, gx = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64),
                         indexing="ij")

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(dim // 2, gx), one_d(dim // 2, gy)], axis=1)  # w first, as MAE
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


class Attention(nn.Module):
    """Multi-head self-attention: explicit softmax(QK^T)V on the "reference" backend, SDPA
    otherwise (xformers on CUDA where installed, for "auto" and "triton"; the explicit
    product with the scale on Q for "auto" in bf16 training on a CPU: ``attention_route``)."""

    def __init__(self, dim, num_heads, backend):
        super().__init__()
        self.num_heads, self.scale, self.backend = num_heads, (dim // num_heads) ** -0.5, backend
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, queries=None):  # B N D -> B M D, M = queries or N
        """``queries``: only the first ``queries`` tokens attend (to all N), so only their
        rows are computed (the CT alone in a CT-only pass); None: every token."""
        b, n, c = x.shape
        m = n if queries is None else queries
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads)
        route = attention_route(self.backend, qkv)
        if route == "xformers":
            q, k, v = qkv.unbind(2)  # B N h d
            x = xformers_ops().memory_efficient_attention(q[:, :m], k, v).reshape(b, m, c)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # B h N d
            q = q[:, :, :m]
            if route == "reference":  # the authors' form
                x = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1) @ v
            elif route == "explicit":  # the scale on q: (B h N d) multiplies, not (B h N N)
                x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
            else:
                x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(b, m, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim, num_heads, mlp_ratio, eps, backend):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, cls_only=False):  # B N D -> B N D, or B 1 D (cls_only: the CT's row alone)
        if cls_only:  # the CT attends to every token; only its row goes on
            x = x[:, :1] + self.attn(self.norm1(x), queries=1)
        else:
            x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """A p x p stride-p convolution, applied as the equal linear map on patch
    vectors in (p, q, c) order, so the swap kernel's patches feed it directly."""

    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, patches):  # B N p*p*C -> B N D
        w = self.proj.weight.permute(0, 2, 3, 1).flatten(1)  # D, p*p*C in (p, q, c) order
        return F.linear(patches, w, self.proj.bias)


class Encoder(nn.Module):
    """μ-Encoder: patch embedding, contextual token, fixed sin-cos positions, blocks, norm."""

    def __init__(self, cfg: MicronBERTConfig, backend: str):
        super().__init__()
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))  # the contextual token z^CT
        self.register_buffer("pos_embed", sincos_pos_embed(d, cfg.grid))  # 1, N+1, D
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, backend)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)

    def forward(self, patches, cls_only=False):  # B N p*p*C -> B 1+N D, or B 1 D (cls_only)
        """``cls_only``: only the CT is wanted (the PoI crop, the DINO teacher): the last block
        computes the CT's row alone (its attention and MLP for one token; q, k, v still for
        all): the same CT as a full pass, with less work."""
        x = self.patch_embed(patches)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for i, blk in enumerate(self.blocks):
            x = blk(x, cls_only=cls_only and i == len(self.blocks) - 1)
        return self.norm(x)


class WeightNormLinear(nn.Module):
    """Bias-free linear with weight normalisation, keys ``weight_g``/``weight_v`` as
    the authors' ``nn.utils.weight_norm``; g is frozen at 1 (DINO's norm_last_layer)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(dim_out, dim_in))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(dim_out, 1), requires_grad=False)

    def forward(self, x):
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    def __init__(self, dim, out_dim, hidden, bottleneck):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        self.last_layer = WeightNormLinear(bottleneck, out_dim)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class Teacher(nn.Module):
    """EMA copy of the encoder and DINO head (never trained by the optimiser)."""

    def __init__(self, cfg, backend):
        super().__init__()
        self.backbone = Encoder(cfg, backend)
        self.head = DINOHead(cfg.embed_dim, cfg.dino_out_dim, cfg.dino_hidden_dim,
                             cfg.dino_bottleneck_dim)


# float frames must be normalised: |x| beyond this is 0-255 pixels given as float
MAX_NORMALISED = 20.0


class MicronBERT(nn.Module):
    def __init__(self, cfg: MicronBERTConfig, backend: str = "auto"):
        super().__init__()
        self.config = cfg
        self.backend = backend = check_buildable(backend)
        self.backbone = Encoder(cfg, backend)
        self.att = DiagonalMicroAttention(cfg.embed_dim, cfg.dma_heads, qkv_bias=True,
                                          qk_scale=cfg.dma_scale, diagonal=cfg.diag_att,
                                          poi_mode=cfg.poi_mask, poi_quantile=cfg.poi_quantile,
                                          backend=backend,
                                          null_key=cfg.dma_null_key)
        if cfg.has_decoder:
            dd = cfg.decoder_embed_dim
            self.decoder_embed = nn.Linear(cfg.embed_dim, dd)
            self.register_buffer("decoder_pos_embed", sincos_pos_embed(dd, cfg.grid))
            self.decoder_blocks = nn.ModuleList(
                Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.norm_eps, backend)
                for _ in range(cfg.decoder_depth))
            self.decoder_norm = nn.LayerNorm(dd, eps=cfg.norm_eps)
            self.decoder_pred = nn.Linear(dd, cfg.patch_size ** 2 * cfg.in_chans)
        if cfg.poi_loss == "dino":
            self.dino_head = DINOHead(cfg.embed_dim, cfg.dino_out_dim, cfg.dino_hidden_dim,
                                      cfg.dino_bottleneck_dim)
            self.teacher = Teacher(cfg, backend)
            self.dino_loss_fn = DINOLoss(cfg.dino_out_dim, cfg.student_temp, cfg.teacher_temp,
                                         cfg.center_momentum)
        if cfg.aux_cls:
            self.fc = nn.Linear(cfg.embed_dim, 1)
        self._init_weights()

    # ---------------------------------------------------------------- init
    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.dma_init == "identity":  # DMA compares the tokens themselves at first
            for lin in (self.att.to_q, self.att.to_k):
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)
        for enc in [self.backbone] + ([self.teacher.backbone] if hasattr(self, "teacher") else []):
            w = enc.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(enc.cls_token, std=0.02)
        if hasattr(self, "teacher"):
            for head in (self.dino_head, self.teacher.head):
                for m in head.mlp:
                    if isinstance(m, nn.Linear):
                        nn.init.trunc_normal_(m.weight, std=0.02)
            self.teacher.backbone.load_state_dict(self.backbone.state_dict())
            self.teacher.head.load_state_dict(self.dino_head.state_dict())
            self.teacher.requires_grad_(False)

    # ---------------------------------------------------------------- input
    def _layout(self, x, name):
        """Check a frame batch; returns whether it is channels-last uint8 (B, H, W, C)."""
        cfg = self.config
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be (B, C, H, W) (or uint8 (B, H, W, C)), got shape "
                             f"{tuple(x.shape)}")
        if x.dtype == torch.uint8:
            cl = x.shape[1] != cfg.in_chans and x.shape[3] == cfg.in_chans
        elif x.is_floating_point():
            cl = False
            # (eager only: a data-dependent check would break a compiled graph)
            top = 0.0 if torch.compiler.is_compiling() or not x.numel() else float(x.detach().abs().amax())
            if top > MAX_NORMALISED:  # 0-255 pixels in a float tensor
                raise ValueError(f"{name} is float with values up to {top:.4g}, but float frames "
                                 f"must be normalised (about -3..3): pass uint8 frames (0-255), "
                                 f"which the model normalises, or normalise them first")
        else:
            raise TypeError(f"{name} must be uint8 frames or float normalised frames, got {x.dtype}")
        c, hw = (x.shape[3], tuple(x.shape[1:3])) if cl else (x.shape[1], tuple(x.shape[2:]))
        if c != cfg.in_chans:
            raise ValueError(f"{name} has {c} channels, the model expects {cfg.in_chans}")
        if hw != cfg.img_size:
            raise ValueError(f"{name} is {hw} pixels, the model expects {cfg.img_size}")
        return cl

    def swap_patches(self, frame_a, frame_b, swap_mask, names=("frame_a", "frame_b"), want=True):
        """Patchified I_{t/s} (frame_a's patches, frame_b's where ``swap_mask``) and, when
        ``want``, frame_a and frame_b patchified: one pass of the swap kernel, which also
        scales and normalises uint8 frames (``config.pixel_mean/std``). (B, N, p*p*C) fp32."""
        cl = self._layout(frame_a, names[0])
        if self._layout(frame_b, names[1]) != cl or frame_a.shape != frame_b.shape \
                or frame_a.dtype != frame_b.dtype:
            raise ValueError(f"{names[0]} {tuple(frame_a.shape)} {frame_a.dtype} and {names[1]} "
                             f"{tuple(frame_b.shape)} {frame_b.dtype} differ")
        u8 = frame_a.dtype == torch.uint8
        cfg = self.config
        return blockwise_swap_patches(
            frame_a, frame_b, swap_mask, cfg.patch_size, cfg.pixel_mean if u8 else None,
            cfg.pixel_std if u8 else None, torch.float32 if u8 else None, return_target=want,
            return_other=want, channels_last=cl, backend=self.backend)

    def patchify(self, images, name="images"):
        """Frames (uint8 or normalised float) -> normalised patches (B, N, p*p*C)."""
        keep = torch.zeros(images.shape[0], self.config.num_patches, dtype=torch.bool,
                           device=images.device)
        return self.swap_patches(images, images, keep, (name, name), want=False)

    def normalize(self, images):
        """Frames (uint8 or normalised float) -> normalised float (B, C, H, W)."""
        return unpatchify(self.patchify(images), self.config.patch_size, self.config.grid,
                          self.config.in_chans)

    # ---------------------------------------------------------------- parts
    def encode(self, images):
        """images (B, C, H, W) -> ct (B, D), tokens (B, N, D)."""
        x = self.backbone(self.patchify(images))
        return x[:, 0], x[:, 1:]

    def extract_features(self, images):
        """Encoder tokens after the final norm, contextual token dropped: (B, N, D)."""
        return self.encode(images)[1]

    def poi_scores(self, ct, tokens):
        """S = softmax_i(<ct, P_i> / sqrt(D)): (B, N)."""
        s = (tokens @ ct.unsqueeze(-1)).squeeze(-1) / math.sqrt(tokens.shape[-1])
        s = s.float().softmax(-1)
        return s.detach() if self.config.poi_detach else s

    def dma(self, tokens_swapped, tokens_next, ct_next=None):
        """DMA between P_{t/s} and P_{t+d} by the configured role -> (out, diag, scores)."""
        cfg = self.config
        scores = None
        if cfg.poi_mask != "none" and ct_next is not None:
            scores = self.poi_scores(ct_next, tokens_next)
        if cfg.dma_role == "paper":
            q, k, v = tokens_next, tokens_swapped, tokens_swapped
        else:  # the authors' code: att([x, x_ref, x])
            q, k, v = tokens_swapped, tokens_next, tokens_swapped
        out, diag = self.att(q, k, v, poi_scores=scores)
        return out, diag, scores

    def encode_then_dma(self, patches):
        """μ-BERT's core path: the patch batches ``patches`` ([I_{t/s}, I_{t+d}], each
        (B, N, p*p*C)) through the encoder in one pass, then DMA between them.
        Returns (x (2B, 1+N, D): both frames' CT and tokens, out, diag, poi_scores or None)."""
        b = patches[0].shape[0]
        x = self.backbone(torch.cat(patches))
        return (x, *self.dma_between(x[:b], x[b:]))

    def dma_between(self, x_a, x_b):
        """DMA between two frames' encoder outputs x_a, x_b (B, 1+N, D) (the earlier or
        swapped frame, then the later one; CT first), so that a frame encoded once
        (``backbone``) serves every pair it is in -> (out, diag, poi_scores or None)."""
        return self.dma(x_a[:, 1:], x_b[:, 1:], x_b[:, 0])

    def pair_pass(self, frame_swapped, frame_next):
        """``encode_then_dma`` of two frame batches (uint8 or normalised float), patchified
        and normalised in one pass of the swap kernel: (x (2B, 1+N, D), out, diag, poi_scores)."""
        keep = torch.zeros(frame_swapped.shape[0], self.config.num_patches, dtype=torch.bool,
                           device=frame_swapped.device)
        ps, _, pn = self.swap_patches(frame_swapped, frame_next, keep, ("frame_swapped", "frame_next"))
        return self.encode_then_dma([ps, pn])

    def pair_forward(self, frame_swapped, frame_next):
        """One encoder pass over both frames, then DMA -> (out, diag, tokens_swapped, tokens_next)."""
        b = frame_swapped.shape[0]
        x, out, diag, _ = self.pair_pass(frame_swapped, frame_next)
        return out, diag, x[:b, 1:], x[b:, 1:]

    def micro_attention(self, frame_swapped, frame_next):
        """DMA of two frames -> (out (B, N, D) after the projection, diag (B, heads, N))."""
        return self.pair_forward(frame_swapped, frame_next)[:2]

    @staticmethod
    def motion_profile(diag):
        """1 - D / max(D) per sample, heads averaged: (B, N), high where the frames differ."""
        d = diag.float().mean(1)
        return 1 - d / d.amax(1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def micro_motion_map(self, frame_a, frame_b):
        """1 - D / max(D) per sample, upsampled to the image: (B, H, W) in [0, 1],
        high where the two frames differ."""
        return self.map_of(self.micro_attention(frame_a, frame_b)[1])

    def map_of(self, diag):
        """DMA's diagonal (B, heads, N) -> the micro-motion map (B, H, W) in [0, 1]."""
        m = self.motion_profile(diag)  # B N
        gh, gw = self.config.grid
        m = F.interpolate(m.view(-1, 1, gh, gw), size=self.config.img_size, mode="bilinear",
                          align_corners=False)
        return m[:, 0].clamp(0, 1)

    def decode(self, tokens):  # B N D -> B N p*p*C
        x = self.decoder_embed(tokens) + self.decoder_pos_embed[:, 1:]
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    # ---------------------------------------------------------------- losses
    def poi_loss(self, patches_next, ct_next, ct_crop):
        """Agreement of the CT of I_{t+d} (its patches ``patches_next``) with that of
        Crop(I_{t+d}): DINO (EMA teacher on the full frame) or MSE."""
        if self.config.poi_loss == "dino":
            with torch.no_grad():
                t = self.teacher.head(self.teacher.backbone(patches_next, cls_only=True)[:, 0])
            return self.dino_loss_fn(self.dino_head(ct_crop), t)
        return poi_mse_loss(ct_crop, ct_next, self.config.mse_var_weight)

    def diag_loss(self, diag, swap_mask, swapped, nxt):
        """The paper's smooth-L1(D, M), or our "match" target (variants.py)."""
        cfg = self.config
        if cfg.diag_target == "swap":
            return swap_diag_loss(diag, swap_mask)
        want = variants.match_target(swap_mask, swapped, nxt, cfg.diag_tol, cfg.diag_change)
        return variants.balanced_diag_loss(diag, want)

    @torch.no_grad()
    def update_teacher(self, momentum: float):
        """EMA update of the DINO teacher from the encoder and the student head."""
        if not hasattr(self, "teacher"):
            return
        src = list(self.backbone.parameters()) + list(self.dino_head.parameters())
        dst = list(self.teacher.backbone.parameters()) + list(self.teacher.head.parameters())
        torch._foreach_lerp_(dst, src, 1 - momentum)  # momentum * dst + (1 - momentum) * src, one pass

    # ---------------------------------------------------------------- forward
    def forward(self, frame_t, frame_next, swap_mask=None, generator=None, crop_rand=None):
        """Pre-training forward on a pair (I_t, I_{t+d}): uint8 frames (B, 3, H, W) or
        (B, H, W, 3), normalised by the swap kernel in one pass, or normalised float frames
        (B, 3, H, W); the loss is the same for both.

        ``swap_mask`` (B, N) bool, drawn with ``generator`` when None; ``crop_rand`` (B, 4)
        fixes the PoI crop (drawn with ``generator`` when None).

        Returns a dict: loss, rec_loss, poi_loss, diag_loss, pred (B, N, p*p*C),
        diag (B, heads, N), swap_mask (B, N), poi_scores (B, N) or None.
        """
        cfg = self.config
        b, n = frame_t.shape[0], cfg.num_patches
        if swap_mask is None:
            swap_mask = generate_swap_mask(cfg.mask_type, b, cfg.grid, cfg.swap_ratio,
                                           generator, device=frame_t.device)
        if not torch.is_tensor(swap_mask) or tuple(swap_mask.shape) != (b, n) \
                or swap_mask.dtype != torch.bool:
            raise ValueError(f"swap_mask must be bool (B, N)=({b}, {n}), got "
                             f"{getattr(swap_mask, 'dtype', None)} {tuple(getattr(swap_mask, 'shape', ()))}")
        swapped, target, nxt = self.swap_patches(frame_t, frame_next, swap_mask,
                                                 ("frame_t", "frame_next"))
        use_crop = self.training and cfg.poi_loss != "none" and cfg.lambda_poi > 0
        if use_crop:
            image_next = unpatchify(nxt, cfg.patch_size, cfg.grid, cfg.in_chans)
            crop = patchify(random_resized_crop(image_next, cfg.crop_scale, generator, rand=crop_rand),
                            cfg.patch_size)
        x, out, diag, scores = self.encode_then_dma([swapped, nxt])  # one encoder pass: (2B, 1+N, D)
        zero = out.new_zeros(()).float()
        pred = self.decode(out) if cfg.has_decoder else None
        rec = reconstruction_loss(pred, target, cfg.norm_pix_loss) if pred is not None else zero
        # the crop's CT alone: its last block computes only the CT's row
        poi = self.poi_loss(nxt, x[b:, 0], self.backbone(crop, cls_only=True)[:, 0]) if use_crop else zero
        dgl = self.diag_loss(diag, swap_mask, swapped, nxt) if cfg.lambda_diag > 0 else zero
        loss = rec + cfg.lambda_poi * poi + cfg.lambda_diag * dgl
        return {"loss": loss, "rec_loss": rec, "poi_loss": poi, "diag_loss": dgl, "pred": pred,
                "diag": diag, "swap_mask": swap_mask, "poi_scores": scores}


def create_model(name: str, backend: str = "auto", **overrides):
    """Build a named μ-BERT model, e.g. ``create_model("micronbert_tiny", poi_loss="mse")``.

    ``backend`` ("auto" | "triton" | "torch" | "reference", micronbert.kernels.backend) is
    chosen here, once, for attention, DMA and the swap; it is not part of the config and
    is not saved in checkpoints.
    """
    return MicronBERT(get_config(name, **overrides), backend=backend)
