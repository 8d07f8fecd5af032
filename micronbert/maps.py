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
    ground-truth motion masks ``masks_root/<subject>/<clip>.png`` as bool (B, S, S), both
    at ``size`` (the masks by nearest neighbour: a 224-px model on a 64-px set)."""
    from PIL import Image

    from .recognition.features import onset_apex_frames
    on, ap = onset_apex_frames(table, size)
    truth = [np.asarray(Image.open(os.path.join(masks_root, r.subject, r.clip + ".png"))) > 127
             for r in table.itertuples()]
    truth = torch.from_numpy(np.stack(truth))
    if tuple(truth.shape[1:]) != tuple(on.shape[2:]):
        truth = F.interpolate(truth[:, None].float(), size=tuple(on.shape[2:]), mode="nearest")[:, 0] > 0.5
    return on, ap, truth


def null_key_probe(tokens_q, tokens_k, beta: float = 300.0, tau: float = 0.003):
    """1 - D' of an absolute matcher on two frames' tokens (B, N, D): the diagonal of
    softmax_j over [beta*cos(q_i, k_j)]_j plus a null logit beta*(1 - tau) per row."""
    c = F.normalize(tokens_q.float(), dim=-1) @ F.normalize(tokens_k.float(), dim=-1).transpose(1, 2)
    s = torch.cat([beta * c, torch.full_like(c[..., :1], beta * (1 - tau))], -1)
    return 1 - torch.exp(torch.diagonal(beta * c, dim1=-2, dim2=-1) - torch.logsumexp(s, -1))


def per_patch_mean(pixel_map: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) or (B, C, H, W) per-pixel values -> their mean per patch (B, N) or (B, N, C)."""
    x = pixel_map.float()
    pooled = F.avg_pool2d(x[:, None] if x.dim() == 3 else x, patch).flatten(2)  # B C N
    return pooled[:, 0] if x.dim() == 3 else pooled.transpose(1, 2)


def location_prior(table, masks_root, size) -> torch.Tensor:
    """A map that sees no pixels: the mean ground-truth mask (H, W) of the clips in
    ``table`` (the training subjects'), resized to ``size``."""
    from PIL import Image
    masks = [np.asarray(Image.open(os.path.join(masks_root, r.subject, r.clip + ".png"))) > 127
             for r in table.itertuples()]
    m = torch.from_numpy(np.stack(masks)).float().mean(0)
    return F.interpolate(m[None, None], size=tuple(size), mode="area")[0, 0]


# the maps scored beside the model's, in the order of the tables
MAP_NAMES = {"model": "model (DMA map)", "untrained": "untrained model (same seed)",
             "pixel_difference": "pixel difference", "optical_flow": "optical flow (Farneback)",
             "location_prior": "location prior (mean training mask)",
             "pixel_cosine": "1 - cos of pixel patches", "token_change": "token change",
             "null_key_probe": "null-key probe on the tokens"}


@torch.no_grad()
def map_diagnostics(model, onset, apex, truth, untrained=None, prior=None, groups=None,
                    precision: str = "auto", keys=None):
    """ROC-AUC against ``truth`` (B, H, W) of the model's micro-motion map of the frames
    ``onset`` -> ``apex`` (uint8, or normalised float; B, 3, H, W) and of the maps beside
    it, all on the patch grid and upsampled alike (``micro_motion_map``), pooled over clips:

    model (``micro_motion_map``), the ``untrained`` model (if given), the pixel difference
    and the Farneback flow magnitude per patch (no model), the location ``prior`` (H, W; if
    given: the mean training mask, no pixels), 1 - cos of the (normalised) pixel patches, and
    two read-outs of the model's encoder: token change 1 - cos(t_onset_i, t_apex_i) and
    ``null_key_probe``.

    Each map is also scored on a pair without motion, (apex, apex), as a control: a map that
    answers to the motion itself scores about 0.5 there; what it scores above 0.5 is a prior
    (position, texture). Returns a list of dicts: key, map, roc_auc, control_no_motion, and
    with ``groups`` ({name: bool (B,) clips}, e.g. ``amplitude_groups``) ``by_group``: the
    ROC-AUC of the map on each group's clips alone. ``precision``: the models' arithmetic
    (auto | fp32 | bf16, kernels.backend.precision); each frame set is encoded once.
    ``keys``: only these maps (MAP_NAMES keys; None: every one there is), so a caller that
    wants some rows computes no other map (the flow is the costly one)."""
    from .kernels.backend import precision as autocast_of
    with autocast_of(onset.device, precision):
        return _map_rows(model, onset, apex, truth, untrained, prior, groups, keys)


def _map_rows(model, onset, apex, truth, untrained, prior, groups, keys=None):
    model.eval()
    cfg = model.config
    gh, gw = cfg.grid
    p = cfg.patch_size
    y = truth.numpy()

    def upsample(patch_map):  # (B, N) -> (B, H, W) like micro_motion_map
        m = F.interpolate(patch_map.float().reshape(-1, 1, gh, gw), size=cfg.img_size,
                          mode="bilinear", align_corners=False)
        return m[:, 0].expand(len(y), -1, -1).numpy()

    def score(patch_map):
        return roc_auc(upsample(patch_map), y)

    def by_group(patch_map):
        m = upsample(patch_map)
        out = {name: roc_auc(m[np.asarray(sel)], y[np.asarray(sel)]) for name, sel in groups.items()}
        return {name: (None if np.isnan(v) else v) for name, v in out.items()}  # None: no clip

    xs = {id(x): model.backbone(model.patchify(x)) for x in (onset, apex)}  # each set encoded once
    enc = {k: x[:, 1:] for k, x in xs.items()}  # tokens
    from .baselines import farneback_flow, pixel_difference  # the recognition baselines' maps
    probes = {
        "model": lambda x, z: model.motion_profile(model.dma_between(xs[id(x)], xs[id(z)])[1]),
        "pixel_difference": lambda x, z: per_patch_mean(pixel_difference(x, z)[:, 0], p),
        "optical_flow": lambda x, z: per_patch_mean(farneback_flow(x, z)[:, 2], p),  # the magnitude
        "pixel_cosine": lambda x, z: 1 - F.cosine_similarity(model.patchify(x), model.patchify(z), dim=-1),
        "token_change": lambda x, z: 1 - F.cosine_similarity(enc[id(x)], enc[id(z)], dim=-1),
        "null_key_probe": lambda x, z: null_key_probe(enc[id(z)], enc[id(x)]),
    }
    if untrained is not None:
        ux = {id(x): untrained.eval().backbone(untrained.patchify(x)) for x in (onset, apex)}
        probes["untrained"] = lambda x, z: untrained.motion_profile(untrained.dma_between(ux[id(x)], ux[id(z)])[1])
    if prior is not None:
        probes["location_prior"] = lambda x, z: per_patch_mean(prior[None], p)
    rows = []
    for k in (k for k in MAP_NAMES if k in probes and (keys is None or k in keys)):
        m = probes[k](onset, apex)
        rows.append({"key": k, "map": MAP_NAMES[k], "roc_auc": score(m),
                     "control_no_motion": score(probes[k](apex, apex))})
        if groups:
            rows[-1]["by_group"] = by_group(m)
    return rows


def amplitude_groups(table, root, bins=((0.0, 1.0), (1.0, 2.0), (2.0, 3.01))) -> dict:
    """{"a-b px": bool (K,)} of the clips of ``table`` by the micro-motion amplitude that
    ``synth --nuisance`` wrote in the sheet of ``root`` (column Amplitude); {} without it.
    Clips without micro-motion (amplitude 0) are in no group."""
    import glob

    import pandas as pd
    sheets = glob.glob(os.path.join(root, "CASME2-coding-*.xlsx"))
    if not sheets:
        return {}
    df = pd.read_excel(sheets[0])
    if "Amplitude" not in df:
        return {}
    amp = {(f"sub{int(r.Subject):02d}", str(r.Filename)): float(r.Amplitude) for r in df.itertuples()}
    a = np.array([amp.get((r.subject, r.clip), 0.0) for r in table.itertuples()])
    return {f"{lo:g}-{min(hi, 3):g} px": (a > 0) & (a >= lo) & (a < hi) for lo, hi in bins}


def map_summary(rows) -> dict:
    """The ROC-AUCs of ``map_diagnostics`` rows by key, and the model's no-motion control."""
    out = {r["key"]: r["roc_auc"] for r in rows}
    out["no_motion_control"] = next(r["control_no_motion"] for r in rows if r["key"] == "model")
    return out


def covering_rows(table, per_class: int = 1) -> list:
    """Row positions of ``table`` (subject, label/emotion columns) for a picture of maps:
    ``per_class`` clips of every class (``no_motion`` too), the subjects taking turns class
    by class, so more than one subject shows wherever the table has more than one."""
    subjects = sorted(table.subject.unique())
    col = "emotion" if "emotion" in table else "label"
    rows, turn = [], 0
    for cls in sorted(table[col].astype(str).unique()):
        for _ in range(per_class):
            pool = [i for i, c in enumerate(table[col].astype(str)) if c == cls and i not in rows]
            if not pool:
                break
            mine = [i for i in pool if table.subject.iloc[i] == subjects[turn % len(subjects)]]
            rows.append((mine or pool)[0])
            turn += 1
    return rows
