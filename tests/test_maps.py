"""Map scoring: the diagnostics separate what the pixels, the tokens and DMA carry."""
import os

import torch

from micronbert import create_model
from micronbert.data.annotations import load_annotations
from micronbert.data.synthetic import write_synthetic_dataset
from micronbert.maps import (MAP_NAMES, amplitude_groups, location_prior, map_diagnostics, map_summary, null_key_probe,
                             onset_apex_masks, roc_auc)


def test_map_diagnostics_on_synthetic_clips(tmp_path):
    data = write_synthetic_dataset(str(tmp_path / "d"), n_subjects=2, clips_per_class=1, progress=False)
    table = load_annotations("synthetic", data)
    on, ap, truth = onset_apex_masks(table, os.path.join(data, "masks"), (64, 64))
    assert on.shape == ap.shape == (8, 3, 64, 64) and truth.shape == (8, 64, 64) and truth.any()
    assert on.dtype == torch.uint8
    torch.manual_seed(0)
    model, untrained = create_model("micronbert_tiny"), create_model("micronbert_tiny")
    prior = location_prior(table[table.subject == "sub01"], os.path.join(data, "masks"), (64, 64))
    rows = map_diagnostics(model, on, ap, truth, untrained=untrained, prior=prior, precision="fp32")
    by = {r["key"]: r for r in rows}
    assert list(by) == list(MAP_NAMES)  # every map of the comparison, in table order
    for r in rows:
        assert 0 <= r["roc_auc"] <= 1 and 0 <= r["control_no_motion"] <= 1, r
    # the model's row is the demo's map_auc: the same protocol (micro_motion_map, pooled); each
    # frame set encoded once there (not both in one batch): equal up to the last bits
    assert abs(by["model"]["roc_auc"] - roc_auc(model.micro_motion_map(on, ap).numpy(), truth.numpy())) < 1e-4
    assert by["pixel_difference"]["roc_auc"] > 0.95 and by["optical_flow"]["roc_auc"] > 0.9
    assert by["pixel_difference"]["control_no_motion"] == 0.5  # a flat map
    assert by["location_prior"]["roc_auc"] == by["location_prior"]["control_no_motion"]  # no pixels
    # even an untrained encoder's tokens carry the motion; the null-key probe reads it out
    assert by["token_change"]["roc_auc"] > 0.9 and by["null_key_probe"]["roc_auc"] > 0.9
    # keys: only the maps asked for, the same numbers as in the full comparison
    some = map_diagnostics(model, on, ap, truth, prior=prior, precision="fp32", keys=("model", "location_prior"))
    assert some == [by["model"], by["location_prior"]]
    summary = map_summary(rows)
    assert set(summary) == set(MAP_NAMES) | {"no_motion_control"}
    assert summary["no_motion_control"] == by["model"]["control_no_motion"]
    # head motion and the rest: the subtraction loses most of its lead
    noisy = write_synthetic_dataset(str(tmp_path / "m"), n_subjects=2, clips_per_class=1, progress=False,
                                    nuisance="medium")
    t = load_annotations("synthetic", noisy)
    on, ap, truth = onset_apex_masks(t, os.path.join(noisy, "masks"), (64, 64))
    groups = amplitude_groups(t, noisy)
    assert amplitude_groups(table, data) == {}  # the clean set has no amplitude column
    assert sum(g.sum() for g in groups.values()) == (t.emotion != "no_motion").sum() == 8
    pix = {r["key"]: r for r in map_diagnostics(model, on, ap, truth, groups=groups)}["pixel_difference"]
    assert pix["roc_auc"] < by["pixel_difference"]["roc_auc"] - 0.1
    assert list(pix["by_group"]) == list(groups)


def test_null_key_probe_flags_only_changed_tokens():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(1, 10, 16, generator=g)
    u = t.clone()
    u[0, 3] += 0.5 * torch.randn(16, generator=g)
    m = null_key_probe(u, t)
    # an unchanged token: D = 1 / (1 + exp(-beta*tau)) = 0.71 at the defaults
    assert m[0, 3] > 0.99 and m[0, torch.arange(10) != 3].max() < 0.3
