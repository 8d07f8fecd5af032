"""MEGC scoring of spotted intervals: a proposal is a true positive when its IoU with a
ground-truth interval of its class is >= 0.5, each ground truth matched at most once;
precision, recall and F1 per class and overall; p fitted leave-one-subject-out."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .intervals import KINDS, SpotParams, intervals_from_curve


def iou(a, b) -> float:
    """IoU of two inclusive frame intervals (onset, offset)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def match(pred: List[tuple], gt: List[tuple], thr: float = 0.5) -> int:
    """True positives: pairs with IoU >= thr, greedily by IoU, each proposal and each
    ground truth used at most once."""
    pairs = sorted(((iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)),
                   reverse=True)
    used_p, used_g, tp = set(), set(), 0
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            tp += 1
    return tp


def prf(tp, n_pred, n_gt) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gt if n_gt else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return dict(tp=int(tp), fp=int(n_pred - tp), fn=int(n_gt - tp), precision=p, recall=r, f1=f)


def megc_counts(pred: Dict[str, List[dict]], gt: Dict[str, List[dict]], thr: float = 0.5) -> dict:
    """MEGC spotting scores over a set: ``pred`` and ``gt`` map a video to its intervals
    (dicts with onset, offset, kind); matching within a video and a class; micro, macro and
    overall (counts summed over the classes) precision / recall / F1."""
    counts = {c: [0, 0, 0] for c in KINDS}
    for v in set(pred) | set(gt):
        for c in KINDS:
            pv = [(x["onset"], x["offset"]) for x in pred.get(v, []) if x["kind"] == c]
            gv = [(x["onset"], x["offset"]) for x in gt.get(v, []) if x["kind"] == c]
            counts[c][0] += match(pv, gv, thr)
            counts[c][1] += len(pv)
            counts[c][2] += len(gv)
    out = {c: prf(*counts[c]) for c in KINDS}
    out["overall"] = prf(*(sum(counts[c][i] for c in KINDS) for i in range(3)))
    return out


P_GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.96, 0.05))


def fit_p_loso(curves: Dict[str, np.ndarray], gt, subjects: Dict[str, str], params: SpotParams,
               grid=P_GRID):
    """Leave-one-subject-out choice of the threshold parameter p: for each subject, the p
    of ``grid`` with the best overall F1 on the other subjects' videos. Returns the
    predictions made with each held-out subject's p and the p per subject."""
    by_p = {p: {v: intervals_from_curve(c, params, p) for v, c in curves.items()} for p in grid}
    preds, chosen = {}, {}
    for s in sorted(set(subjects.values())):
        train = [v for v in curves if subjects[v] != s]
        if not train:  # one subject: no one to fit on, the default p
            best = params.p
        else:
            f1 = {p: megc_counts({v: by_p[p][v] for v in train},
                                 {v: gt.get(v, []) for v in train})["overall"]["f1"] for p in grid}
            best = max(grid, key=lambda p: (f1[p], -abs(p - params.p)))
        chosen[s] = best
        for v in curves:
            if subjects[v] == s:
                preds[v] = by_p[best][v] if best in by_p else intervals_from_curve(curves[v], params, best)
    return preds, chosen
