"""Where the micro-motion information is lost: ROC-AUC of several motion maps of the same
held-out clips (onset -> apex) against their ground-truth motion masks.

  pixel difference     mean |I_apex - I_onset| per patch: no model, the easy upper line;
  token change         1 - cos(t_onset_i, t_apex_i) of the encoder's patch tokens: what
                       the encoder carries to DMA;
  DMA map              the model's micro-motion map 1 - D / max(D) (DESIGN §1.3);
  null-key matcher     the diagonal of softmax_j over [beta*cos(t_apex_i, t_onset_j)]_j plus
                       one extra "null" logit beta*(1 - tau) per row, on the same tokens:
                       an absolute match test instead of DMA's relative one.

Each map is also scored on a pair without motion, (apex, apex), as a control: a map that
answers to the motion itself scores about 0.5 there; what it scores above 0.5 is a prior
(position, texture). Works on any synthetic set with masks (``micronbert synth`` or the
demo's ``DIR/data``).

    python bench/map_diagnostics.py --data runs/demo/data --checkpoint runs/demo/pretrain/last.pt

Writes bench/results/<device>/map_diagnostics.{csv,md}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import write_table  # noqa: E402
from micronbert import create_model, load_checkpoint  # noqa: E402
from micronbert.cli import onset_apex_masks, roc_auc  # noqa: E402
from micronbert.data.annotations import load_annotations  # noqa: E402
from micronbert.data import normalize  # noqa: E402


def null_key_map(tq, tk, beta, tau):
    """1 - D' for the null-key matcher on tokens (B, N, D): (B, N)."""
    c = F.normalize(tq.float(), dim=-1) @ F.normalize(tk.float(), dim=-1).transpose(1, 2)
    s = torch.cat([beta * c, torch.full_like(c[..., :1], beta * (1 - tau))], -1)
    d = torch.exp(torch.diagonal(beta * c, dim1=-2, dim2=-1) - torch.logsumexp(s, -1))
    return 1 - d


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic set with masks/ (micronbert synth)")
    p.add_argument("--checkpoint", default=None, help="our checkpoint (default: untrained micronbert_tiny)")
    p.add_argument("--held-out", type=int, default=2, help="last subjects to score (the demo's)")
    p.add_argument("--beta", type=float, default=300.0, help="null-key matcher sharpness")
    p.add_argument("--tau", type=float, default=0.003, help="null-key matcher threshold on 1 - cos")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    model = load_checkpoint(a.checkpoint)[0] if a.checkpoint else create_model("micronbert_tiny")
    model.eval()
    table = load_annotations("synthetic", a.data)
    table = table[table.subject.isin(sorted(table.subject.unique())[-a.held_out:])]
    on, ap, truth = onset_apex_masks(table, os.path.join(a.data, "masks"), model.config.img_size)
    on, ap = normalize(on), normalize(ap)
    gh, gw = model.config.grid

    def auc(patch_map):  # (B, N) -> upsampled like micro_motion_map, scored on the masks
        m = patch_map.float().view(-1, 1, gh, gw)
        m = F.interpolate(m, size=model.config.img_size, mode="bilinear", align_corners=False)
        return roc_auc(m[:, 0].numpy(), truth.numpy())

    p_sz = model.config.patch_size
    with torch.no_grad():
        probes = {
            "pixel difference": lambda x, y: F.avg_pool2d((x - y).abs().mean(1, keepdim=True), p_sz).flatten(1),
            "token change": lambda x, y: 1 - F.cosine_similarity(*(model.encode(z)[1] for z in (x, y)), dim=-1),
            "DMA map": lambda x, y: model.motion_profile(model.micro_attention(x, y)[1]),
            f"null-key matcher (beta {a.beta:g}, tau {a.tau:g})":
                lambda x, y: null_key_map(model.encode(y)[1], model.encode(x)[1], a.beta, a.tau),
        }
        rows = [{"map": name, "roc_auc": auc(fn(on, ap)), "control_no_motion": auc(fn(ap, ap))}
                for name, fn in probes.items()]
    for r in rows:
        r["checkpoint"] = os.path.basename(a.checkpoint) if a.checkpoint else "untrained"
        r["clips"] = int(truth.shape[0])
    write_table("map_diagnostics", rows, "cpu")
    return rows


if __name__ == "__main__":
    main()
