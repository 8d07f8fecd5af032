"""A few hundred CPU steps of micronbert_tiny on real face frames with small
synthetic motion drive the reconstruction loss well down."""
import json

import torch

from micronbert import create_model
from micronbert.data import normalize, synthetic_pairs
from micronbert.train import pretrain


def test_pretraining_drives_reconstruction_loss_down(tmp_path):
    torch.manual_seed(0)
    model = create_model("micronbert_tiny")
    t, n, motion, _ = synthetic_pairs(256, 64, seed=0)
    assert motion.any() and (t != n).any()
    g = torch.Generator().manual_seed(0)

    def batches(step):
        idx = torch.randint(len(t), (16,), generator=g)
        return normalize(t[idx]), normalize(n[idx])
    log = tmp_path / "log.jsonl"
    rec = pretrain(model, batches, steps=200, lr=1e-3, warmup=10, log_path=str(log),
                   generator=torch.Generator().manual_seed(1), progress=False)
    first = sum(r["rec_loss"] for r in rec[:10]) / 10
    last = sum(r["rec_loss"] for r in rec[-10:]) / 10
    assert last < 0.2 * first, (first, last)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 200 and lines[-1]["step"] == 199


def test_synthetic_motion_is_where_the_mask_says():
    t, n, motion, subj = synthetic_pairs(16, 64, seed=3)
    diff = (t.float() - n.float()).abs().sum(1)  # B H W
    inside = diff[motion].mean()
    outside = diff[~motion].mean()
    assert inside > 10 * outside, (inside, outside)
    assert outside < 0.5
    assert subj.max() < 101
