"""Does a synthetic set let place answer? Three leave-one-subject-out checks (issue 25):

- the location prior's map ROC-AUC: the training subjects' mean motion mask
  (``maps.location_prior``), pooled to the patch grid and upsampled as ``map_diagnostics``
  scores every map, against the held-out subjects' exact masks, pooled over all clips;
- recognition from the motion's position alone: the centroid (y, x) of each clip's exact
  mask and its square terms, through the project's linear head (``evaluate.loso``);
- recognition from a motion-aware baseline (pixel difference, Farneback flow;
  ``evaluate.feature_baselines``) on the same folds, to show the set is solvable.

Chance band of a UF1: the central 95 % of the UF1 of the same predictions shuffled against
the labels (``chance_band``): a classifier that predicts as often each class but knows
nothing of the clip. Clips without motion (``no_motion``) have no position and are left out
of every recognition check here.

    python -m micronbert.benchmark_checks DATA [--patch 8]   # prints JSON
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F


def chance_band(y, preds, draws: int = 1000, seed: int = 0, q=(0.025, 0.975)):
    """(lo, hi): quantiles ``q`` of the UF1 of ``preds`` permuted against ``y`` ``draws`` times."""
    from .recognition.report import metrics
    y, p = np.asarray(y), np.asarray(preds)
    n = int(max(y.max(), p.max())) + 1
    rng = np.random.default_rng(seed)
    vals = [metrics(y, rng.permutation(p), n)["uf1"] for _ in range(draws)]
    return tuple(float(v) for v in np.quantile(vals, q))


def mask_positions(truth: torch.Tensor) -> torch.Tensor:
    """bool masks (K, H, W) -> centroids (K, 2) as (y, x) fractions of the frame (nan if empty)."""
    m = truth.float()
    h, w = m.shape[1:]
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) / h
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) / w
    area = m.sum((1, 2))
    return torch.stack([(m * ys).sum((1, 2)) / area, (m * xs).sum((1, 2)) / area], 1)


def position_features(pos: torch.Tensor) -> torch.Tensor:
    """(K, 2) positions -> (K, 5): y, x, y^2, xy, x^2 (a linear head then separates regions)."""
    y, x = pos[:, 0], pos[:, 1]
    return torch.stack([y, x, y * y, x * y, x * x], 1)


def loso_result(features, y, subjects, seed: int = 0, predictions=None) -> dict:
    """LOSO UF1 of the linear head on ``features`` (or of given ``predictions``) and its chance band."""
    from .recognition.probe import loso
    from .recognition.report import metrics
    y = torch.as_tensor(y)
    n = int(y.max()) + 1
    preds = predictions if predictions is not None else loso(features.float(), y, subjects, n, seed=seed)[0]
    return {"uf1": metrics(y.numpy(), np.asarray(preds), n)["uf1"],
            "chance_band": chance_band(y.numpy(), preds, seed=seed), "n_clips": len(y), "n_classes": n}


def location_prior_auc(table, truth: torch.Tensor, masks_root: str, patch: int = 8) -> float:
    """ROC-AUC of the location prior (each subject's clips scored by the others' mean mask)."""
    from .maps import location_prior, per_patch_mean, roc_auc
    size = tuple(truth.shape[1:])
    grid = (size[0] // patch, size[1] // patch)
    scores = torch.zeros(truth.shape)
    for s in sorted(table.subject.unique()):
        test = torch.from_numpy((table.subject == s).to_numpy(copy=True))
        prior = per_patch_mean(location_prior(table[~test.numpy()], masks_root, size)[None], patch)
        scores[test] = F.interpolate(prior.reshape(1, 1, *grid), size=size, mode="bilinear",
                                     align_corners=False)[0, 0]
    return roc_auc(scores.numpy(), truth.numpy())


def check_benchmark(root: str, patch: int = 8, seed: int = 0, baselines: bool = True) -> dict:
    """The three checks on the synthetic set ``root`` (``micronbert synth``'s folder)."""
    from PIL import Image

    from .recognition.folds import loso_splits
    from .recognition.probe import feature_baselines
    from .maps import onset_apex_masks
    from .data.annotations import load_annotations
    from .data.synthetic_motion import benchmark_of
    table = load_annotations("synthetic", root)
    masks = os.path.join(root, "masks")
    first = os.path.join(masks, table["subject"].iloc[0], table["clip"].iloc[0] + ".png")
    size = np.asarray(Image.open(first)).shape[:2]
    onset, apex, truth = onset_apex_masks(table, masks, size)
    out = {"benchmark": benchmark_of(root), "classes": list(table.attrs["classes"]),
           "location_prior_auc": location_prior_auc(table, truth, masks, patch)}
    moving = truth.flatten(1).any(1)  # clips with a motion: they have a position
    y = torch.as_tensor(np.unique(table.label.values[moving.numpy()], return_inverse=True)[1])
    subjects = table.subject.values[moving.numpy()]
    out["position"] = loso_result(position_features(mask_positions(truth[moving])), y, subjects, seed)
    if baselines:
        splits, _ = loso_splits(subjects, y, int(y.max()) + 1)
        preds = feature_baselines(onset[moving], apex[moving], y, splits, int(y.max()) + 1, patch, seed=seed)
        out["baselines"] = {k: loso_result(None, y, subjects, seed, p) for k, p in preds.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a `micronbert synth` folder")
    ap.add_argument("--patch", type=int, default=8, help="patch size of the map grid (the model's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(check_benchmark(args.data, args.patch, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
