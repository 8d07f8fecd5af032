"""μ-BERT's losses (docs/method.md §6): reconstruction, PoI (DINO or MSE), the diagonal loss.
Our extensions of them (not in the paper) are in variants.py."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def reconstruction_loss(pred, target, norm_pix: bool = False):
    """MSE of the decoder's patches (B, N, p*p*C) against I_t's, optionally per-patch
    normalised targets (MAE's norm_pix_loss)."""
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return F.mse_loss(pred.float(), target.float())


def poi_mse_loss(ct_crop, ct_next, var_weight: float = 1.0):
    """The paper's PoI loss as it describes it: regress the crop's CT (B, D) onto the
    stop-gradient full-frame CT, with a variance hinge (VICReg) across the batch against
    collapse."""
    loss = F.mse_loss(ct_crop.float(), ct_next.detach().float())
    if ct_crop.shape[0] > 1:
        std = torch.sqrt(ct_crop.float().var(0) + 1e-4)
        loss = loss + var_weight * F.relu(1 - std).mean()
    return loss


def swap_diag_loss(diag, swap_mask):
    """The paper's smooth-L1(D, M): D (B, heads, N) against the swap mask (B, N)."""
    return F.smooth_l1_loss(diag.float(), swap_mask.float().unsqueeze(1).expand_as(diag))


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher softmax and the student's."""

    def __init__(self, out_dim, student_temp, teacher_temp, center_momentum):
        super().__init__()
        self.student_temp, self.teacher_temp, self.momentum = student_temp, teacher_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out, teacher_out):  # (V*B, K) student views, (B, K) teacher
        t = F.softmax((teacher_out - self.center) / self.teacher_temp, dim=-1).detach()
        views = student_out.float().chunk(student_out.shape[0] // teacher_out.shape[0])
        loss = sum((-t * F.log_softmax(s / self.student_temp, -1)).sum(-1).mean() for s in views)
        if self.training:
            self.update_center(teacher_out)
        return loss / len(views)

    @torch.no_grad()
    def update_center(self, teacher_out):
        batch_center = teacher_out.float().sum(0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], device=teacher_out.device, dtype=torch.float32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        self.center.mul_(self.momentum).add_(batch_center / count, alpha=1 - self.momentum)


