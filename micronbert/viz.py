"""Pictures: micro-motion maps over the frames, loss curves, bars, spotting curves."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _written(plt, fig, path, ax=None, title=None):
    """Set ``ax``'s ``title`` (if any), lay the figure out, write it to ``path`` and close it."""
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


MAP_CAPTION = (
    "Each row: a frame pair of one clip, I_t and the later frame I_t+d (d = the number of frames "
    "between them). |I_t+d - I_t|: the pixel difference, summed over R, G, B (0-765). "
    "Micro-motion map: 1 - D/max(D), D = DMA's diagonal attention (how much each patch of I_t+d "
    "attends to the same patch of I_t), bilinearly upsampled, over I_t; 1 = changed most. "
    "True motion: where the frames really differ (the dataset's mask), when known.")


def _blank_ticks(ax):
    """Axes without ticks or frame, keeping its labels (set_axis_off would hide them)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)


def save_motion_maps(path, frames_t, frames_next, maps, truth=None, title=None, row_labels=None,
                     no_truth="no ground-truth mask", truth_name="true motion"):
    """A grid, one row per frame pair: I_t, I_t+d, |I_t+d - I_t|, the micro-motion map over
    I_t, and the true motion (the mask, or ``no_truth`` written in its place; no such
    column when both are None), with colour
    bars for the difference and the map, ``row_labels`` (e.g. "sub01 EP01_01 / surprise /
    frames 1 -> 5") down the left and a caption that defines every panel.

    frames: uint8 (B, 3, H, W); maps: (B, H, W) in [0, 1]; truth: bool (B, H, W) or None.
    Returns the matplotlib Figure (already saved to ``path`` and closed).
    """
    import textwrap
    b = len(maps)
    if b == 0:
        raise ValueError("save_motion_maps needs at least one map (a pair of frames)")
    plt = _plt()
    cols = 5 if truth is not None or no_truth else 4
    width = 2.2 * cols + 1.2
    fig, axes = plt.subplots(b, cols, figsize=(width, 2.2 * b + 1.6), squeeze=False,
                             layout="constrained")
    firsts = frames_t.permute(0, 2, 3, 1).cpu().numpy()
    nexts = frames_next.permute(0, 2, 3, 1).cpu().numpy()
    diffs = np.abs(firsts.astype(np.float32) - nexts.astype(np.float32)).sum(-1)
    top = max(1.0, float(diffs.max()))  # one scale for every row: one colour bar
    im_diff = im_map = None
    for i in range(b):
        a, n = firsts[i], nexts[i]
        ax = axes[i]
        ax[0].imshow(a)
        ax[1].imshow(n)
        im_diff = ax[2].imshow(diffs[i], cmap="magma", vmin=0, vmax=top)
        ax[3].imshow(a)
        im_map = ax[3].imshow(maps[i].float().cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        if truth is not None:
            ax[4].imshow(truth[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        elif cols == 5:
            ax[4].text(0.5, 0.5, no_truth, ha="center", va="center", wrap=True, fontsize=7,
                       transform=ax[4].transAxes)
        for x in ax:
            _blank_ticks(x)
        if row_labels is not None:
            ax[0].set_ylabel(row_labels[i], fontsize=7)
    for x, name in zip(axes[0], ("I_t", "I_t+d", "|I_t+d - I_t|", "micro-motion map", truth_name)):
        x.set_title(name, fontsize=8)
    for im, col, label in ((im_diff, 2, "|I_t+d - I_t| (RGB sum)"), (im_map, 3, "micro-motion (0-1)")):
        cb = fig.colorbar(im, ax=list(axes[:, col]), location="bottom", shrink=0.9, aspect=12)
        cb.set_label(label, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.supxlabel(textwrap.fill(MAP_CAPTION, int(width * 15)), fontsize=6.5, ha="left", x=0.01)
    if title:
        fig.suptitle(textwrap.fill(title, int(width * 13)), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def read_log(path):
    """The records of a JSON-lines training log (OUT/log.jsonl)."""
    import json
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_keys(records):
    """Every loss in the records (keys ending in "loss", in first-seen order)."""
    keys = []
    for r in records:
        keys += [k for k in r if k.endswith("loss") and k not in keys]
    return keys


def save_curves(path, records, keys=None, title=None):
    """Loss curves (log scale) of every loss in ``records`` (the log.jsonl records; default:
    ``loss_keys``). A loss that is 0 throughout (its weight is 0: not trained) is named in
    the legend instead of drawn. Returns the Figure (saved to ``path`` and closed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r["step"] for r in records]
    for k in keys or loss_keys(records):
        ys = [r.get(k, float("nan")) for r in records]
        if all(not (y > 0) for y in ys):
            ax.plot([], [], " ", label=f"{k}: off in this config (its weight is 0), not drawn")
            continue
        ax.plot(steps, ys, label=k, lw=1.2 if k == "loss" else 0.9)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (log scale)")
    ax.set_yscale("log")
    ax.set_title(title or "pre-training losses (loss = rec + lambda_poi poi + lambda_diag diag)",
                 fontsize=8)
    ax.legend(fontsize=7)
    return _written(plt, fig, path)


def save_confusion(path, matrix, classes, title=None, normalise=True):
    """The confusion matrix, rows normalised (each true class sums to 1: the share of its
    clips predicted as each class, the count beside it) unless ``normalise`` is False."""
    plt = _plt()
    n = len(classes)
    m = np.asarray(matrix, dtype=np.float64)
    shown = m / np.maximum(m.sum(1, keepdims=True), 1) if normalise else m
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for i in range(n):
        for j in range(n):
            text = f"{shown[i, j]:.2f}\n({int(m[i, j])})" if normalise else str(int(m[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > shown.max() / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true" + (" (each row sums to 1; clips in brackets)" if normalise else ""))
    return _written(plt, fig, path, ax, title)


def _chance_lines(ax, chance, keys, colors):
    """Dashed chance lines: one ``chance`` level for all metrics, or {key: level} (one line
    per level, labelled with the metrics it serves)."""
    if chance is None:
        return
    if not isinstance(chance, dict):
        chance = {k: chance for k, _ in keys}
    by_level = {}
    for k, label in keys:
        if chance.get(k) is not None:
            by_level.setdefault(round(float(chance[k]), 4), []).append((k, label))
    for level, ks in by_level.items():
        color = colors[ks[0][0]] if len(ks) == 1 else "grey"
        ax.axhline(level, color=color, ls="--", lw=1,
                   label=f"chance of {' and '.join(lb for _, lb in ks)} = {level:.2f}")


def save_bars(path, results, keys=("accuracy", "uf1", "uar"), chance=None, title=None,
              ylim=(0, 1.25), spread=None):
    """Grouped bars: one group per method (``results``: {name: {key: value or None}}), one
    bar per metric (``keys``: names, or (name, label) pairs), ``chance`` as dashed lines
    (a level, or {key: level}), ``spread`` ({name: {key: [per-fold values]}}) as black
    points over the bars (one per fold)."""
    plt = _plt()
    names = list(results)
    keys = [k if isinstance(k, tuple) else (k, k.upper() if k != "accuracy" else k) for k in keys]
    x = np.arange(len(names))
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6))
    colors, dotted = {}, False
    for i, (k, label) in enumerate(keys):
        vals = [np.nan if results[n].get(k) is None else results[n][k] for n in names]
        xs = x + (i - (len(keys) - 1) / 2) * w
        bars = ax.bar(xs, vals, w, label=label)
        colors[k] = bars.patches[0].get_facecolor() if bars.patches else "grey"
        for b, v in zip(bars, vals):
            if not np.isnan(v):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
        for xi, n in zip(xs, names):
            pts = (spread or {}).get(n, {}).get(k) or []
            if pts:
                ax.plot([xi] * len(pts), pts, "k.", ms=3, alpha=0.6,
                        label=None if dotted else "one point per fold (held-out subject)")
                dotted = True
    _chance_lines(ax, chance, keys, colors)
    ax.set_xticks(x, [n.replace("_", " ").replace(" (", "\n(") for n in names], fontsize=7)
    ax.set_ylim(*ylim)
    ax.set_ylabel("score (higher is better)", fontsize=7)
    ax.legend(fontsize=6.5, ncol=3, loc="upper center")
    return _written(plt, fig, path, ax, title)


def save_score_curves(path: str, curves: Dict[str, np.ndarray], found: Dict[str, List[dict]],
                      thresholds: Dict[str, float], fps: float, gt: Optional[List[dict]] = None,
                      title: str = ""):
    """One panel per method: the curve, its threshold, the found intervals (orange: micro,
    purple: macro) and the ground truth ``gt`` (a strip under the curve; None: none given)."""
    plt = _plt()
    fig, axes = plt.subplots(len(curves), 1, figsize=(12, 2.6 * len(curves)), squeeze=False)
    colors = {"micro": "tab:orange", "macro": "tab:purple"}
    for ax, (name, c) in zip(axes[:, 0], curves.items()):
        t = np.arange(len(c)) / fps
        ax.plot(t, c, lw=0.8, color="k")
        ax.axhline(thresholds[name], color="tab:red", ls="--", lw=0.8, label="threshold")
        lo, hi = float(np.min(c)), float(np.max(c))
        for x in found.get(name, []):
            ax.axvspan(x["onset"] / fps, (x["offset"] + 1) / fps, color=colors[x["kind"]], alpha=0.3)
        for x in gt or []:
            ax.axvspan(x["onset"] / fps, (x["offset"] + 1) / fps, ymin=0, ymax=0.08,
                       color=colors[x["kind"]], alpha=0.9)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_ylabel(name)
        ax.set_xlim(0, len(c) / fps)
    truth = "no ground truth given" if gt is None else "strip at the bottom: ground truth"
    axes[-1, 0].set_xlabel(f"seconds (shaded: found; {truth}; orange micro, purple macro)")
    if title:
        axes[0, 0].set_title(title)
    _written(plt, fig, path)
