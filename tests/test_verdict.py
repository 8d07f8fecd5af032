"""The verdict every result file opens with is computed from the numbers: constructed
numbers below, above and mixed against the baselines and chance give the sentence they must."""
import numpy as np
import pandas as pd

from micronbert.evidence import comparison_rows, demo_verdict_lines
from micronbert.maps import covering_rows
from micronbert.recognition.report import loso_markdown
from micronbert.verdict import best_baselines, chance_levels, verdict

CHANCE = {"uf1": 0.2, "uar": 0.2}


def test_below_the_one_best_baseline_everywhere_and_at_chance():
    v = verdict({"uf1": 0.22, "uar": 0.23}, {"optical_flow": {"uf1": 0.52, "uar": 0.50},
                                             "pixel_difference": {"uf1": 0.19, "uar": 0.19}},
                CHANCE, names={"optical_flow": "optical flow"})
    assert v == ("the model is below optical flow (the best baseline) on every metric; "
                 "above chance (by more than 0.05) on none.")


def test_above_every_baseline_and_chance():
    v = verdict({"uf1": 0.60, "uar": 0.61}, {"optical_flow": {"uf1": 0.52, "uar": 0.50}}, CHANCE)
    assert v.startswith("the model is above optical_flow (the best baseline) on every metric")
    assert "above chance (by more than 0.05) on every metric" in v and "worse" not in v


def test_mixed_best_baselines_are_named_per_metric_and_chance_per_metric():
    v = verdict({"map": 0.60, "uf1": 0.21}, {"prior": {"map": 0.90, "uf1": None}, "flow": {"map": 0.45, "uf1": 0.5}},
                {"map": 0.5, "uf1": 0.2}, labels={"map": "map ROC-AUC", "uf1": "UF1"})
    assert "(map ROC-AUC: prior 0.900, UF1: flow 0.500) on every metric" in v
    assert "above chance (by more than 0.05) on map ROC-AUC only" in v


def test_below_the_untrained_model_says_pre_training_made_it_worse():
    v = verdict({"uf1": 0.25, "uar": 0.30}, {"untrained": {"uf1": 0.28, "uar": 0.26}}, CHANCE)
    assert "below the untrained model (same config, same seed) on uf1: pre-training made it worse" in v
    assert "worse" not in verdict({"uf1": 0.3, "uar": 0.3}, {"untrained": {"uf1": 0.28, "uar": 0.26}}, CHANCE)


def test_chance_levels_and_best_baselines():
    assert chance_levels(5) == {"accuracy": 0.2, "uf1": 0.2, "uar": 0.2}
    assert chance_levels(2, [3, 1])["accuracy"] == 0.75  # always guessing the largest class
    assert best_baselines({"a": {"m": 0.3}, "b": {"m": 0.4}, "c": {"m": None}}, ["m", "n"]) == {"m": ("b", 0.4)}


def _demo_results():
    diag = [{"key": k, "map": k, "roc_auc": a, "control_no_motion": c} for k, a, c in
            (("model", 0.604, 0.610), ("untrained", 0.52, 0.52), ("pixel_cosine", 0.612, 0.51),
             ("location_prior", 0.902, 0.902))]
    return {"map_diagnostics": diag, "split": "pre-training saw only faces 8-55",
            "loso": {"accuracy": 0.23, "uf1": 0.221, "uar": 0.233, "n_classes": 5,
                     "baselines": {"optical_flow": {"accuracy": 0.5, "uf1": 0.525, "uar": 0.508},
                                   "untrained": {"accuracy": 0.22, "uf1": 0.218, "uar": 0.225}}}}


def test_results_md_ranks_every_map_method_and_opens_with_the_verdict():
    res = _demo_results()
    rows = comparison_rows(res)
    aucs = [r["map_auc"] for r in rows if r["map_auc"] is not None]
    assert aucs == sorted(aucs, reverse=True) and len(aucs) == 4  # pixel_cosine included, ranked
    assert rows[-1]["map_auc"] is None and rows[-1]["loso_uf1"] == 0.525  # flow: LOSO only
    lines = demo_verdict_lines(res, rows)
    assert lines[0].startswith("**Does it work?** The model is below the best baseline")
    assert "map ROC-AUC: location prior (mean training mask) 0.902" in lines[0]
    assert "above chance (by more than 0.05) on map ROC-AUC only" in lines[0]
    assert "LOSO UF1 0.200 (1/5 classes)" in lines[2] and "map ROC-AUC 0.500" in lines[2]
    assert any("reads place or texture, not motion" in x for x in lines)  # control 0.610 >= 0.604
    assert any(x.startswith("Split: pre-training saw only") for x in lines)


def test_loso_md_opens_with_the_verdict_and_shows_the_fold_spread():
    fold = lambda u: {"subject": "s", "n": 4, "accuracy": u, "uf1": u, "uar": u}  # noqa: E731
    res = {"mode": "probe", "n_subjects": 2, "n_clips_scored": 8, "n_classes": 4,
           "chance": chance_levels(4), "model": {"accuracy": 0.5, "uf1": 0.5, "uar": 0.5,
                                                "per_fold": [fold(0.1), fold(0.9)]},
           "baselines": {"optical_flow": {"accuracy": 0.2, "uf1": 0.2, "uar": 0.2, "how": "|a - b|",
                                          "per_fold": [fold(0.2), fold(0.2)]}}}
    md = loso_markdown(res).splitlines()
    assert md[2].startswith("**Does it work?** The model is above optical_flow (the best baseline) on every")
    assert "above chance (by more than 0.05) on every metric" in md[2]
    row = next(x for x in md if x.startswith("| model |"))
    assert "0.100 / 0.500 / 0.900" in row
    assert "\\|a - b\\|" in next(x for x in md if x.startswith("| optical_flow |"))


def test_map_rows_cover_every_class_and_more_than_one_subject():
    t = pd.DataFrame({"subject": ["sub07"] * 7 + ["sub08"] * 7,
                      "emotion": ["a", "b", "c", "d", "e", "f", "no_motion"] * 2})
    rows = covering_rows(t)
    assert sorted(t.emotion.iloc[rows]) == sorted(set(t.emotion))
    assert set(t.subject.iloc[rows]) == {"sub07", "sub08"}
    one = t[t.emotion != "b"].iloc[np.r_[0:6]]  # one subject, class b missing: every class kept
    assert sorted(one.emotion.iloc[covering_rows(one)]) == sorted(set(one.emotion))
