"""Our extensions of μ-BERT's losses, not in the paper; opt-in through config fields
(``diag_target="match"``, named config ``micronbert_tiny_nullkey``). The paper's diagonal
loss, smooth-L1(D, M) on the swap mask, is ``losses.swap_diag_loss``.

"match" target: D_i should be 1 wherever the key patch shows what the query patch shows
(every swapped patch, and every patch that did not change between the two frames) and 0
where the two frames differ. Note: it is supervised by a per-patch pixel-difference
threshold, so it distils that baseline; report it as a labelled variant (README, "Demo
results").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def match_target(swap_mask, swapped, nxt, tol: float, change=None):
    """(B, N) float: 1 where the patchified I_{t/s} and I_{t+d} agree within ``tol`` (and
    every swapped patch), 0 where they differ by ``change`` or more, -1 (left out) between.

    Args:
        swap_mask: bool (B, N). swapped, nxt: (B, N, p*p*C) normalised patches.
        tol, change: mean |difference| thresholds (change None: = tol, nothing left out).
    """
    diff = (swapped.float() - nxt.float()).abs().mean(-1)  # B N
    change = tol if change is None else change
    want = torch.where(diff > change, 0.0, -1.0)
    want = torch.where(diff <= tol, 1.0, want)
    return want.masked_fill(swap_mask, 1.0)


def balanced_diag_loss(diag, want):
    """smooth-L1 of D (B, heads, N) against a "match" target (B, N): the changed patches
    are few, so the two classes are averaged apart and the loss is the mean of the two (a
    class absent from the batch is left out, and so are the patches whose target is -1)."""
    want = want.unsqueeze(1).expand_as(diag)
    loss = F.smooth_l1_loss(diag.float(), want.clamp_min(0), reduction="none")
    masks = torch.stack([want == 0, want == 1]).float()  # changed, unchanged (static shapes)
    count = masks.flatten(1).sum(1)
    means = (loss * masks).flatten(1).sum(1) / count.clamp_min(1)
    return means.sum() / (count > 0).sum()
