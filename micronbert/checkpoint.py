"""Checkpoints: the authors' released files (docs/checkpoints.md) and our own.

``load_official_checkpoint`` reads a file of the authors' format under
``torch.load(weights_only=True)`` with only ``argparse.Namespace`` allow-listed,
infers the architecture from the tensors' shapes (cross-checked with ``args``),
and returns a ``MicronBERT`` that computes what their code computes: DMA role
"official" (their ``att([x, x_ref, x])``), no PoI masking, diagonal attention
only when the file says ``diag_att=True``.

``save_checkpoint``/``load_checkpoint``: our own files, written atomically
(temporary file, fsync, rename).
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
from dataclasses import fields
from typing import Any, Dict, Optional

import torch

from .config import MicronBERTConfig
from .model import MicronBERT

# authors' model names -> what the shapes cannot tell
_OFFICIAL_HEADS = {"mae_vit_small_patch8": (4, 4)}


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: the message names the problem."""


def _torch_load(path, map_location):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a loadable checkpoint (torch.load with "
                              f"weights_only=True failed: {type(e).__name__}: {e})") from e


def _strip_module(sd: Dict[str, Any]) -> Dict[str, Any]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _count(sd, prefix):
    idx = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def official_config(sd: Dict[str, torch.Tensor], args: Optional[dict], path="checkpoint",
                    **overrides) -> MicronBERTConfig:
    """The MicronBERTConfig of an authors' state dict (shapes first, ``args`` to cross-check)."""
    args = args or {}
    need = ["backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.proj.weight",
            "att.to_q.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a Micron-BERT state dict, missing {missing}")
    d = sd["backbone.cls_token"].shape[-1]
    _, c, p, _ = sd["backbone.patch_embed.proj.weight"].shape
    n = sd["backbone.pos_embed"].shape[1] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise CheckpointError(f"{path}: pos_embed has {n} patch rows, not a square grid")
    img = side * p
    if "img_size" in args and int(args["img_size"]) != img:
        raise CheckpointError(f"{path}: args.img_size={args['img_size']} but the weights are for {img} px")
    name = args.get("model_name", "mae_vit_small_patch8")
    heads, dec_heads = _OFFICIAL_HEADS.get(name, (args.get("num_heads"), args.get("decoder_num_heads")))
    if heads is None:
        raise CheckpointError(f"{path}: unknown model_name {name!r} and no num_heads in args; "
                              f"pass num_heads=... and decoder_num_heads=...")
    has_dec = "decoder_embed.weight" in sd
    kw = dict(img_size=img, patch_size=p, in_chans=c, embed_dim=d,
              depth=_count(sd, "backbone.blocks."), num_heads=heads,
              mlp_ratio=sd["backbone.blocks.0.mlp.fc1.weight"].shape[0] / d,
              has_decoder=has_dec, dma_heads=1, dma_role="official",
              diag_att=bool(args.get("diag_att", False)), poi_mask="none",
              aux_cls="fc.weight" in sd, poi_loss="dino" if "teacher.head.last_layer.weight_v" in sd else "none")
    if has_dec:
        kw.update(decoder_embed_dim=sd["decoder_embed.weight"].shape[0],
                  decoder_depth=_count(sd, "decoder_blocks."), decoder_num_heads=dec_heads or heads)
    if kw["poi_loss"] == "dino":
        kw.update(dino_out_dim=sd["teacher.head.last_layer.weight_v"].shape[0],
                  dino_hidden_dim=sd["teacher.head.mlp.0.weight"].shape[0],
                  dino_bottleneck_dim=sd["teacher.head.last_layer.weight_v"].shape[1])
    kw.update(overrides)
    return MicronBERTConfig(**kw)


def load_official_checkpoint(path, map_location="cpu", backend: str = "auto",
                             **overrides) -> MicronBERT:
    """Load an authors' Micron-BERT checkpoint into a MicronBERT (eval mode).

    Args:
        path: their ``torch.save`` dict (``model``, ``args``, ``epoch``, ...), keys
            with or without ``module.``, with or without DINO weights.
        map_location: as ``torch.load``. backend: the model's path (``MicronBERT``).
        overrides: config fields to force.
    Returns:
        the model; ``model.official_args`` holds their args as a dict.
    Raises:
        CheckpointError naming missing, unexpected or mis-shaped keys.
    """
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict, got "
                              f"{type(ckpt).__name__}" + (f" with keys {sorted(ckpt)[:8]}"
                                                           if isinstance(ckpt, dict) else ""))
    args = ckpt.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    sd = _strip_module(ckpt["model"])
    model = MicronBERT(official_config(sd, args, path, **overrides), backend=backend)
    mapped = {}
    for k, v in sd.items():
        if k.startswith("student.backbone."):  # the same module as backbone.* in their code
            twin = "backbone." + k[len("student.backbone."):]
            if twin in sd and not torch.equal(sd[twin], v):
                raise CheckpointError(f"{path}: {k} differs from {twin}; they must be one module")
            continue
        if k.startswith("student.head."):
            k = "dino_head." + k[len("student.head."):]
        mapped[k] = v
    load_state_dict_strict(model, mapped, path)
    model.official_args = args
    return model.eval()


def load_state_dict_strict(model, sd, path="checkpoint"):
    """load_state_dict that names every missing, unexpected and mis-shaped key, and never
    leaves a partial load behind (nothing is copied unless everything matches)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"mis-shaped keys {shapes}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


# ------------------------------------------------------------------ our own
def save_checkpoint(path, model, **extra):
    """Atomically write ``{"model", "config", **extra}``: temp file, fsync, rename."""
    m = getattr(model, "module", model)
    obj = {"format": "micronbert-fused/1", "model": m.state_dict(), "config": m.config.to_dict(), **extra}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def config_from_dict(conf: Dict[str, Any], path="checkpoint") -> MicronBERTConfig:
    """The config saved in one of our checkpoints. Files written before the backend left the
    config carry ``fused``: it chose a path, not the model, and is dropped."""
    conf = {k: v for k, v in conf.items() if k != "fused"}
    known = {f.name for f in fields(MicronBERTConfig)}
    bad = sorted(set(conf) - known)
    if bad:
        raise CheckpointError(f"{path}: its config has fields this version does not know: {bad}")
    return MicronBERTConfig(**conf)


def load_checkpoint(path, map_location="cpu", model: Optional[MicronBERT] = None,
                    backend: str = "auto"):
    """Read one of our checkpoints; returns (model, the whole dict). The model is built on
    ``backend`` unless ``model`` is given (its weights are then loaded into it)."""
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "micronbert-fused/1":
        raise CheckpointError(f"{path}: not a micronbert-fused checkpoint "
                              "(for the authors' files use load_official_checkpoint)")
    if model is None:
        model = MicronBERT(config_from_dict(ckpt["config"], path), backend=backend)
    load_state_dict_strict(getattr(model, "module", model), ckpt["model"], path)
    return model, ckpt
