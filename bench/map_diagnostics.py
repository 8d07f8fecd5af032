"""Where the micro-motion information is lost: ROC-AUC of several motion maps of the same
held-out clips (onset -> apex) against their ground-truth motion masks.

  pixel difference     mean |I_apex - I_onset| per patch: no model, the easy upper line;
  token change         1 - cos(t_onset_i, t_apex_i) of the encoder's patch tokens: what
                       the encoder carries to DMA;
  DMA map              the model's micro-motion map 1 - D / max(D) (docs/method.md §3);
  null-key probe        the diagonal of softmax_j over [300*cos(t_apex_i, t_onset_j)]_j plus
                       one extra "null" logit 300*(1 - 0.003) per row, on the same tokens:
                       an absolute match test instead of DMA's relative one
                       (micronbert.maps.null_key_probe).

Each map is also scored on a pair without motion, (apex, apex), as a control: a map that
answers to the motion itself scores about 0.5 there; what it scores above 0.5 is a prior
(position, texture). Works on any synthetic set with masks (``micronbert synth`` or the
demo's ``DIR/data``).

    python bench/map_diagnostics.py --data runs/demo/data --checkpoint runs/demo/pretrain/last.pt

Writes bench/results/<device>/map_diagnostics.{csv,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import write_table  # noqa: E402
from micronbert import create_model, load_checkpoint  # noqa: E402
from micronbert.data import normalize  # noqa: E402
from micronbert.data.annotations import load_annotations  # noqa: E402
from micronbert.maps import map_diagnostics, onset_apex_masks  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a synthetic set with masks/ (micronbert synth)")
    p.add_argument("--checkpoint", default=None, help="our checkpoint (default: untrained micronbert_tiny)")
    p.add_argument("--held-out", type=int, default=2, help="last subjects to score (the demo's)")
    p.add_argument("--model", default="micronbert_tiny",
                   help="named config of the untrained model (e.g. micronbert_tiny_nullkey)")
    p.add_argument("--overrides", default=None, help="JSON config overrides of the untrained model")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    if a.checkpoint:
        model = load_checkpoint(a.checkpoint)[0]
    else:
        model = create_model(a.model, **json.loads(a.overrides or "{}"))
    model.eval()
    table = load_annotations("synthetic", a.data)
    table = table[table.subject.isin(sorted(table.subject.unique())[-a.held_out:])]
    on, ap, truth = onset_apex_masks(table, os.path.join(a.data, "masks"), model.config.img_size)
    rows = map_diagnostics(model, normalize(on), normalize(ap), truth)
    for r in rows:
        r["checkpoint"] = a.checkpoint or f"untrained {a.model} {a.overrides or ''}".strip()
        r["clips"] = int(truth.shape[0])
    write_table("map_diagnostics", rows, "cpu")
    return rows


if __name__ == "__main__":
    main()
