"""Motion scores of frame pairs: ``ModelScorer`` (μ-BERT's PoI-weighted DMA map) and
``FlowScorer`` (the MDMD-style optical-flow baseline)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..kernels.backend import precision, resolve_precision


class ModelScorer:
    """PoI-weighted DMA micro-motion score of pairs; the model's backend was chosen when it
    was built, the precision (auto | fp32 | bf16, ``kernels.backend.resolve_precision``)
    here. ``encode`` then ``pairs`` score pairs that share frames with each frame encoded
    once (``score_video``); ``__call__`` scores independent pairs."""
    name = "micronbert"

    def __init__(self, model, device: Optional[str] = None, bf16: bool = True, precision: str = "auto"):
        self.model = model.eval()
        self.device = device or next(model.parameters()).device.type
        self.model.to(self.device)
        self.size = tuple(model.config.img_size)
        self.precision = resolve_precision(precision if bf16 else "fp32", self.device)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """uint8 crops (F, 3, S, S) -> encoder outputs (F, 1+N, D) on the device, ``batch``
        frames per pass."""
        m = self.model
        with precision(self.device, self.precision):
            return torch.cat([m.backbone(m.patchify(frames[i:i + batch].to(self.device, non_blocking=True)))
                              for i in range(0, len(frames), batch)])

    @torch.no_grad()
    def pairs(self, x_a: torch.Tensor, x_b: torch.Tensor):
        """Encoder outputs of the earlier and later frames (B, 1+N, D) -> scores (B,), patch
        maps (B, N)."""
        m = self.model
        with precision(self.device, self.precision):
            _, diag, s = m.dma_between(x_a, x_b)
            if s is None:  # a config without PoI masking: the PoI scores all the same
                s = m.poi_scores(x_b[:, 0], x_b[:, 1:])
        maps = m.motion_profile(diag)
        return (s.float() * maps).sum(1).cpu().numpy(), maps.cpu()

    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        """uint8 (B, 3, S, S) earlier and later crops -> scores (B,), patch maps (B, N)."""
        n = len(a)
        x = self.encode(torch.cat([a, b]), batch=2 * n)
        return self.pairs(x[:n], x[n:])


class FlowScorer:
    """MDMD-style optical-flow score (module doc), on grey crops of ``size`` px."""
    name = "mdmd_flow"

    def __init__(self, size: int = 112, grid: int = 6, bins: int = 8):
        self.size, self.grid, self.bins = (size, size), grid, bins

    def one(self, a: np.ndarray, b: np.ndarray) -> float:
        import cv2

        from ..baselines import farneback
        ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        # head motion: the global shift (phase correlation) undone before the flow, then
        # the median of what is left; in flat regions the flow is 0 either way
        win = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F)
        (sx, sy), _ = cv2.phaseCorrelate(ga.astype(np.float32), gb.astype(np.float32), win)
        gb = cv2.warpAffine(gb, np.float32([[1, 0, -sx], [0, 1, -sy]]), gb.shape[::-1],
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        flow = farneback(ga, gb)
        flow -= np.median(flow.reshape(-1, 2), axis=0)
        m = max(1, flow.shape[0] // 12)  # the crop's edge: new content when the head moves
        flow = flow[m:-m, m:-m]
        mag = np.hypot(flow[..., 0], flow[..., 1])
        ang = (np.arctan2(flow[..., 1], flow[..., 0]) + 2 * np.pi) % (2 * np.pi)
        bins = np.minimum((ang / (2 * np.pi / self.bins)).astype(int), self.bins - 1)
        h, w = mag.shape
        md = []
        for i in range(self.grid):
            for j in range(self.grid):
                sl = (slice(i * h // self.grid, (i + 1) * h // self.grid),
                      slice(j * w // self.grid, (j + 1) * w // self.grid))
                bb, mm = bins[sl].ravel(), mag[sl].ravel()
                main = np.bincount(bb, minlength=self.bins).argmax()
                md.append(mm[bb == main].mean())
        md = np.sort(np.array(md))[::-1]
        return float(md[: max(1, len(md) // 3)].mean())

    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        an = a.permute(0, 2, 3, 1).cpu().numpy()
        bn = b.permute(0, 2, 3, 1).cpu().numpy()
        return np.array([self.one(x, y) for x, y in zip(an, bn)]), None
