"""Pictures: micro-motion maps over the frames, loss curves."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_motion_maps(path, frames_t, frames_next, maps, truth=None, title=None):
    """A grid: onset frame, later frame, |difference|, micro-motion map (and ground truth).

    frames: uint8 (B, 3, H, W); maps: (B, H, W) in [0, 1]; truth: bool (B, H, W) or None.
    """
    plt = _plt()
    b = len(maps)
    cols = 5 if truth is not None else 4
    fig, axes = plt.subplots(b, cols, figsize=(2.2 * cols, 2.2 * b), squeeze=False)
    for i in range(b):
        a = frames_t[i].permute(1, 2, 0).cpu().numpy()
        n = frames_next[i].permute(1, 2, 0).cpu().numpy()
        diff = np.abs(a.astype(np.float32) - n.astype(np.float32)).sum(-1)
        panels = [(a, "I_t", None), (n, "I_t+d", None), (diff, "|I_t+d - I_t|", "magma"),
                  (maps[i].cpu().numpy(), "micro-motion map", "jet")]
        if truth is not None:
            panels.append((truth[i].cpu().numpy(), "true motion", "gray"))
        for ax, (img, name, cmap) in zip(axes[i], panels):
            if name == "micro-motion map":
                ax.imshow(a)
                ax.imshow(img, cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(img, cmap=cmap)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_curves(path, records, keys=("loss", "rec_loss", "poi_loss")):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    steps = [r["step"] for r in records]
    for k in keys:
        ax.plot(steps, [r[k] for r in records], label=k)
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_confusion(path, matrix, classes, title=None):
    plt = _plt()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_bars(path, results, keys=("accuracy", "uf1", "uar"), chance=None, title=None):
    """Grouped bars: one group per method (``results``: {name: {accuracy, uf1, uar}}), one
    bar per metric, the chance UF1 as a dashed line."""
    plt = _plt()
    names = list(results)
    x = np.arange(len(names))
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.2))
    for i, k in enumerate(keys):
        vals = [results[n][k] for n in names]
        bars = ax.bar(x + (i - (len(keys) - 1) / 2) * w, vals, w, label=k.upper() if k != "accuracy" else k)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance UF1")
    ax.set_xticks(x, [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
