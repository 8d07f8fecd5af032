"""Scoring micro-motion maps against ground-truth motion masks (the synthetic sets carry
them): ROC-AUC, the no-motion control, and diagnostics that show where motion
information is lost between the pixels, the encoder's tokens and DMA's diagonal."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F


def roc_auc(scores, labels) -> float:
    """ROC-AUC by the rank statistic (ties averaged)."""
    from scipy.stats import rankdata
    s, y = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    npos, nneg = y.sum(), (~y).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def onset_apex_masks(table, masks_root, size):
    """uint8 onset and apex frames (B, 3, S, S) of the clips in ``table`` and their
    ground-truth motion masks ``masks_root/<subject>/<clip>.png`` as bool (B, S, S)."""
    from PIL import Image

    from .evaluate import onset_apex_frames
    on, ap = onset_apex_frames(table, size)
    truth = [np.asarray(Image.open(os.path.join(masks_root, r.subject, r.clip + ".png"))) > 127
             for r in table.itertuples()]
    return on, ap, torch.from_numpy(np.stack(truth))


def null_key_probe(tokens_q, tokens_k, beta: float = 300.0, tau: float = 0.003):
    """1 - D' of an absolute matcher on two frames' tokens (B, N, D): the diagonal of
    softmax_j over [beta*cos(q_i, k_j)]_j plus a null logit beta*(1 - tau) per row."""
    c = F.normalize(tokens_q.float(), dim=-1) @ F.normalize(tokens_k.float(), dim=-1).transpose(1, 2)
    s = torch.cat([beta * c, torch.full_like(c[..., :1], beta * (1 - tau))], -1)
    return 1 - torch.exp(torch.diagonal(beta * c, dim1=-2, dim2=-1) - torch.logsumexp(s, -1))


@torch.no_grad()
def map_diagnostics(model, onset, apex, truth):
    """ROC-AUC against ``truth`` (B, H, W) of four patch maps of normalised onset -> apex
    frames, and of the same maps on (apex, apex) (the control: 0.5 = no prior):

    pixel difference (no model), token change 1 - cos of the encoder's tokens, the DMA
    map, and ``null_key_probe`` on the encoder's tokens. Returns a list of dicts."""
    model.eval()
    cfg = model.config
    gh, gw = cfg.grid

    def score(patch_map):  # (B, N) -> upsampled like micro_motion_map
        m = F.interpolate(patch_map.float().view(-1, 1, gh, gw), size=cfg.img_size,
                          mode="bilinear", align_corners=False)
        return roc_auc(m[:, 0].numpy(), truth.numpy())

    enc = {id(x): model.encode(x) for x in (onset, apex)}  # (ct, tokens), each set encoded once

    def ct(x):
        return enc[id(x)][0]

    def tokens(x):
        return enc[id(x)][1]

    probes = {
        "pixel difference": lambda x, y: F.avg_pool2d((x - y).abs().mean(1, keepdim=True),
                                                      cfg.patch_size).flatten(1),
        "token change": lambda x, y: 1 - F.cosine_similarity(tokens(x), tokens(y), dim=-1),
        "DMA map": lambda x, y: model.motion_profile(model.dma(tokens(x), tokens(y), ct(y))[1]),
        "null-key probe on the tokens": lambda x, y: null_key_probe(tokens(y), tokens(x)),
    }
    return [{"map": name, "roc_auc": score(fn(onset, apex)), "control_no_motion": score(fn(apex, apex))}
            for name, fn in probes.items()]
