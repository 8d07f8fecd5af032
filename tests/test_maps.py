"""Map scoring: the diagnostics separate what the pixels, the tokens and DMA carry."""
import os

import torch

from micronbert import create_model
from micronbert.data import normalize
from micronbert.data.annotations import load_annotations
from micronbert.data.synthetic import write_synthetic_dataset
from micronbert.maps import map_diagnostics, null_key_probe, onset_apex_masks


def test_map_diagnostics_on_synthetic_clips(tmp_path):
    data = write_synthetic_dataset(str(tmp_path / "d"), n_subjects=2, clips_per_class=1, progress=False)
    table = load_annotations("synthetic", data)
    on, ap, truth = onset_apex_masks(table, os.path.join(data, "masks"), (64, 64))
    assert on.shape == ap.shape == (8, 3, 64, 64) and truth.shape == (8, 64, 64) and truth.any()
    torch.manual_seed(0)
    rows = {r["map"]: r for r in map_diagnostics(create_model("micronbert_tiny"), normalize(on),
                                                  normalize(ap), truth)}
    assert list(rows) == ["pixel difference", "token change", "DMA map", "null-key probe on the tokens"]
    assert rows["pixel difference"]["roc_auc"] > 0.95
    for r in rows.values():  # (apex, apex): no motion anywhere
        assert 0 <= r["control_no_motion"] <= 1
    assert rows["pixel difference"]["control_no_motion"] == 0.5  # a flat map
    # even an untrained encoder's tokens carry the motion; the null-key probe reads it out
    assert rows["token change"]["roc_auc"] > 0.9 and rows["null-key probe on the tokens"]["roc_auc"] > 0.9


def test_null_key_probe_flags_only_changed_tokens():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(1, 10, 16, generator=g)
    u = t.clone()
    u[0, 3] += 0.5 * torch.randn(16, generator=g)
    m = null_key_probe(u, t)
    # an unchanged token: D = 1 / (1 + exp(-beta*tau)) = 0.71 at the defaults
    assert m[0, 3] > 0.99 and m[0, torch.arange(10) != 3].max() < 0.3
