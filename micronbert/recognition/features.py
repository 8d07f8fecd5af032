"""What recognition sees of a clip: its onset and apex frames, and the model's features of
the pair (``pair_features``), on the frozen model or on a fresh one of the same config."""
from __future__ import annotations

import torch

from ..data.io import read_frames, resize_u8


def onset_apex_frames(table, size):
    """uint8 (K, 3, *size) onset and apex frames of every clip of an annotation table."""
    pairs = [resize_u8(torch.from_numpy(read_frames(r.path, [r.onset_index, r.apex_index]))
                       .permute(0, 3, 1, 2), size) for r in table.itertuples()]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def pair_features(model, onset, apex) -> torch.Tensor:
    """Per pair (differentiable): the micro-motion profile 1 - D/max D (N), the per-patch
    change of the encoder tokens between onset and apex, scaled by its maximum (N), and the
    mean DMA output (D): (B, 2N + D), fp32."""
    out, diag, ta, tb = model.pair_forward(onset, apex)
    change = (tb.float() - ta.float()).norm(dim=-1)
    change = change / change.amax(1, keepdim=True).clamp_min(1e-12)
    return torch.cat([model.motion_profile(diag), change, out.float().mean(1)], 1)


@torch.no_grad()
def frame_features(model, onset, apex, device="cpu", batch: int = 32, precision: str = "fp32") -> torch.Tensor:
    """``pair_features`` of uint8 frame batches (K, 3, H, W), in eval mode, as fp32 on the
    CPU; ``precision`` (auto | fp32 | bf16) of the model's pass (kernels.backend.precision)."""
    from ..kernels.backend import precision as autocast_of
    model.eval().to(device)
    with autocast_of(device, precision):
        return torch.cat([pair_features(model, onset[i:i + batch].to(device),
                                        apex[i:i + batch].to(device)).float().cpu()
                          for i in range(0, len(onset), batch)])


def clip_features(model, table, device="cpu", batch: int = 32) -> torch.Tensor:
    """``pair_features`` of the onset and apex frames of every clip of ``table``."""
    onset, apex = onset_apex_frames(table, model.config.img_size)
    return frame_features(model, onset, apex, device, batch)


def untrained_like(model, seed: int = 0):
    """A fresh model of the same config and backend, initialised from ``seed`` (the
    caller's RNG state is left as it was)."""
    from ..model import MicronBERT
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MicronBERT(model.config, backend=model.backend)


def pick_device(device):
    """``device``, or CUDA where it is available, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
