"""Motion scores of frame pairs: ``ModelScorer`` (μ-BERT's PoI-weighted DMA map) and
``FlowScorer`` (the MDMD-style optical-flow baseline)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..kernels.backend import precision


class ModelScorer:
    """PoI-weighted DMA micro-motion score of pairs; the model's backend was chosen when it
    was built. CUDA: bf16 autocast (the fused kernels under ``backend="auto"``); CPU: fp32."""
    name = "micronbert"

    def __init__(self, model, device: Optional[str] = None, bf16: bool = True):
        self.model = model.eval()
        self.device = device or next(model.parameters()).device.type
        self.model.to(self.device)
        self.size = tuple(model.config.img_size)
        self.bf16 = bf16 and self.device == "cuda"

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor):
        """uint8 (B, 3, S, S) earlier and later crops -> scores (B,), patch maps (B, N)."""
        m = self.model
        a, b = a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True)
        with precision(self.device, self.bf16):
            n = len(a)
            x, _, diag, s = m.encode_then_dma(m.patchify(torch.cat([a, b])).split(n))
            if s is None:  # a config without PoI masking: the PoI scores all the same
                s = m.poi_scores(x[n:, 0], x[n:, 1:])
        maps = m.motion_profile(diag)
        return (s.float() * maps).sum(1).cpu().numpy(), maps.cpu()


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
