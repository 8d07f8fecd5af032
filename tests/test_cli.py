import json

from micronbert.cli import main, roc_auc


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "5", "--batch", "4", "--pairs", "16",
                 "--eval-pairs", "4"]) == 0
    res = json.loads((out / "results.json").read_text())
    for k in ("map_auc", "map_auc_untrained", "rec_loss_first10", "rec_loss_last10"):
        assert k in res
    for f in ("motion_maps.png", "motion_maps_untrained.png", "loss.png", "model.pt", "train_log.jsonl"):
        assert (out / f).stat().st_size > 0, f


def test_roc_auc_matches_sklearn():
    import numpy as np
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.random(500) > 0.7
    s = rng.random(500) + 0.5 * y
    s[:50] = 0.3  # ties
    assert abs(roc_auc(s, y) - roc_auc_score(y, s)) < 1e-12
