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
import errno
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
        raise CheckpointError(_load_failure(path, e)) from e


def _load_failure(path, e: Exception) -> str:
    """One short line for a file torch.load refused: ours, never torch's advice."""
    msg = str(e)
    name = re.search(r"Unsupported global: (?:GLOBAL )?([\w.]+)", msg)
    if name:
        return (f"{path}: refused: it holds pickled Python objects ({name.group(1)}), not only "
                f"tensors, and loading them could run code; this loader reads tensor-only files")
    why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", msg)
    first = why.group(1) if why else (msg.strip().splitlines() or [""])[0]
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{path} is not a loadable checkpoint ({type(e).__name__}: {first})"


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
    return _official_model(_torch_load(path, map_location), path, backend, **overrides)


def _official_model(ckpt, path, backend="auto", **overrides) -> MicronBERT:
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict, got "
                              f"{type(ckpt).__name__}" + (f" with keys {sorted(ckpt)[:8]}"
                                                           if isinstance(ckpt, dict) else ""))
    args = ckpt.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    sd = _strip_module(ckpt["model"])
    cfg = official_config(sd, args, path, **overrides)
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
    check_before_build(cfg, mapped, path)
    model = MicronBERT(cfg, backend=backend)
    load_state_dict_strict(model, mapped, path)
    model.official_args = args
    return model.eval()


def _listed(keys, most: int = 6) -> str:
    """``['a', 'b', ... N more]``: a key list that stays one short line."""
    keys = list(keys)
    more = f", ... {len(keys) - most} more" if len(keys) > most else ""
    return repr(keys[:most])[:-1] + more + "]"


def _key_problems(own: Dict[str, tuple], sd: Dict[str, Any]) -> list:
    """What keeps ``sd`` from loading into a model whose state shapes are ``own``."""
    shape = lambda v: tuple(v.shape) if torch.is_tensor(v) else type(v).__name__  # noqa: E731
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {shape(sd[k])} vs model {own[k]}"
              for k in sorted(set(sd) & set(own)) if shape(sd[k]) != own[k]]
    return ([f"missing keys {_listed(missing)}"] if missing else []) + \
        ([f"unexpected keys {_listed(unexpected)}"] if unexpected else []) + \
        ([f"mis-shaped keys {_listed(shapes, 3)}"] if shapes else [])


def load_state_dict_strict(model, sd, path="checkpoint"):
    """load_state_dict that names every missing, unexpected and mis-shaped key, and never
    leaves a partial load behind (nothing is copied unless everything matches)."""
    problems = _key_problems({k: tuple(v.shape) for k, v in model.state_dict().items()}, sd)
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


# bounds on a file's config, checked before anything is built from it: far above any real
# μ-BERT, far below what a hostile file could ask for
_LIMITS = {"img_size": 4096, "patch_size": 512, "in_chans": 64, "embed_dim": 8192, "depth": 128,
           "num_heads": 256, "decoder_embed_dim": 8192, "decoder_depth": 128,
           "decoder_num_heads": 256, "dma_heads": 256, "dino_out_dim": 1 << 18,
           "dino_hidden_dim": 16384, "dino_bottleneck_dim": 8192, "mlp_ratio": 16}
_MAX_POS_EMBED = 1 << 24  # (patches + 1) x width: the sin-cos table is computed, not loaded


def check_before_build(cfg: MicronBERTConfig, sd: Dict[str, Any], path="checkpoint") -> None:
    """Refuse a config out of ``_LIMITS`` and a state dict whose keys or shapes differ from
    the ones ``cfg`` implies (found on the ``meta`` device: nothing is allocated), so that a
    small file cannot make a large model be built before its tensors are checked."""
    for name, most in _LIMITS.items():
        vals = getattr(cfg, name)
        for v in vals if isinstance(vals, tuple) else (vals,):
            if v > most:
                raise CheckpointError(f"{path}: its config says {name} {v}, above the bound "
                                      f"{most}: refused before building the model (damaged file?)")
    width = max(cfg.embed_dim, cfg.decoder_embed_dim if cfg.has_decoder else 0)
    if (cfg.num_patches + 1) * width > _MAX_POS_EMBED:
        raise CheckpointError(f"{path}: its config asks for {cfg.num_patches} patches of width "
                              f"{width}, above the bound {_MAX_POS_EMBED} elements: refused")
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in MicronBERT(cfg, backend="reference").state_dict().items()}
    problems = _key_problems(own, sd)
    if problems:
        raise CheckpointError(f"{path}: its tensors do not match its config, refused before "
                              f"building the model: " + "; ".join(problems))


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _no_space(e):  # torch's writer wraps it in an internal message: say what happened
            raise OSError(errno.ENOSPC, "No space left on device: could not write the checkpoint",
                          path) from e
        raise


def _no_space(e: BaseException) -> bool:
    """Whether ``e`` or an exception it came from is ENOSPC (a full disk)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


def config_from_dict(conf: Dict[str, Any], path="checkpoint") -> MicronBERTConfig:
    """The config saved in one of our checkpoints. Files written before the backend left the
    config carry ``fused``: it chose a path, not the model, and is dropped."""
    conf = {k: v for k, v in conf.items() if k != "fused"}
    known = {f.name for f in fields(MicronBERTConfig)}
    bad = sorted(set(conf) - known)
    if bad:
        raise CheckpointError(f"{path}: its config has fields this version does not know: {bad}")
    try:
        return MicronBERTConfig(**conf)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its config is not valid: {e}") from e


def load_checkpoint(path, map_location="cpu", model: Optional[MicronBERT] = None,
                    backend: str = "auto", fold: bool = False):
    """Read one of our checkpoints; returns (model, the whole dict). The model is built on
    ``backend`` unless ``model`` is given (its weights are then loaded into it). ``fold``:
    the file must be a fine-tuned fold model (``finetune --save-models``)."""
    ckpt = read_checkpoint(path, map_location)
    if fold:
        _check_fold(ckpt, path)
    return _our_model(ckpt, path, model, backend)


def _check_fold(ckpt, path):
    missing = [k for k in ("classes", "head", "norm") if k not in ckpt]
    if missing or not isinstance(ckpt["classes"], (list, tuple)) or not ckpt["classes"]:
        raise CheckpointError(f"{path}: not a fine-tuned fold model (no {', '.join(missing) or 'classes'}; "
                              f"a pre-training checkpoint?): `finetune --save-models` writes fold "
                              f"models; give a pre-training one to finetune/evaluate --checkpoint")


def read_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """One of our checkpoints as its dict, checked to be ours (no model is built)."""
    ckpt = _torch_load(path, map_location)
    _check_ours(ckpt, path)
    return ckpt


def is_ours(ckpt) -> bool:
    """Whether a loaded file is one of ours, by its content: our format marker, or our
    ``config`` dict (the authors' files carry ``args`` instead)."""
    return isinstance(ckpt, dict) and (str(ckpt.get("format", "")).startswith("micronbert-fused/")
                                       or isinstance(ckpt.get("config"), dict))


def _check_ours(ckpt, path):
    if not is_ours(ckpt):
        raise CheckpointError(f"{path}: not a micronbert-fused checkpoint "
                              "(for the authors' files use load_official_checkpoint)")
    if ckpt.get("format") != "micronbert-fused/1":
        raise CheckpointError(f"{path}: format {ckpt.get('format')!r} (a micronbert-fused file "
                              f"damaged or of another version); this version reads 'micronbert-fused/1'")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: a micronbert-fused checkpoint without its 'config' or "
                              f"'model' dict (damaged?)")


def _our_model(ckpt, path, model=None, backend="auto"):
    _check_ours(ckpt, path)
    if model is None:
        cfg = config_from_dict(ckpt["config"], path)
        check_before_build(cfg, ckpt["model"], path)
        model = MicronBERT(cfg, backend=backend)
    load_state_dict_strict(getattr(model, "module", model), ckpt["model"], path)
    return model, ckpt


def load_model(path, map_location="cpu", backend: str = "auto") -> MicronBERT:
    """The model of a checkpoint, ours or the authors', decided by the file's content (our
    format marker), never by trying one loader after the other: an error in one of our
    files (unknown config field, missing or mis-shaped keys) is raised as it is."""
    ckpt = _torch_load(path, map_location)
    if is_ours(ckpt):
        return _our_model(ckpt, path, backend=backend)[0]
    return _official_model(ckpt, path, backend)
