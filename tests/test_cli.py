import json

from micronbert.cli import main
from micronbert.maps import roc_auc


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--batch", "4", "--subjects", "3",
                 "--clips-per-class", "1", "--held-out", "1", "--corpus-faces", "2",
                 "--corpus-clips", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    for k in ("map_auc", "map_auc_untrained", "map_auc_no_motion_control"):
        assert 0 <= res[k] <= 1, k
    assert res["nuisance"] == "medium" and res["pretrain"]["model"] == "micronbert_tiny"
    assert res["pretrain"]["extensions"] == {}  # the paper's μ-BERT, no variant
    # the baselines' map AUCs under the map_auc protocol, and the no-motion control
    for k in ("untrained", "pixel_difference", "optical_flow", "location_prior", "no_motion_control"):
        assert 0 <= res["map_baselines"][k] <= 1, k
    assert res["map_baselines"]["no_motion_control"] == res["map_auc_no_motion_control"]
    for r in res["map_diagnostics"]:  # the amplitude sweep: map AUC by amplitude of the micro-motion
        assert list(r["by_group"]) == ["0-1 px", "1-2 px", "2-3 px"]
        assert all(v is None or 0 <= v <= 1 for v in r["by_group"].values())
    # 2 labeled subjects' clips (4 classes + no_motion) + the corpus
    assert res["pretrain"]["clips"] == 2 * 5 + 2 * 2
    for k in ("accuracy", "uf1", "uar", "chance_uf1", "n_classes", "n_subjects"):
        assert k in res["loso"]
    assert res["loso"]["n_subjects"] == 3 and res["loso"]["n_classes"] == 5
    assert 0 <= res["loso"]["baselines"]["untrained"]["uf1"] <= 1
    table = (out / "results.md").read_text()
    assert "pixel difference" in table and "untrained model" in table and f"{res['map_auc']:.3f}" in table
    for f in ("motion_maps.png", "confusion.png", "loss.png", "loso.json", "pretrain/last.pt",
              "pretrain/log.jsonl", "results.md", "results.png"):
        assert (out / f).stat().st_size > 0, f


def test_synth_pretrain_evaluate_visualize_commands(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--subjects", "2", "--clips-per-class", "1"]) == 0
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"steps": 2, "batch": 2, "warmup": 1, "ckpt_every": 1}))
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--model", "micronbert_tiny",
                 "--config", str(conf), "--steps", "3"]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the flag won over the config file
    # resume without repeating --model (the default is micronbert_s8): the file's config is used
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--resume", str(run / "last.pt"),
                 "--config", str(conf), "--steps", "4", "--backend", "reference"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
    assert main(["evaluate", "--data", str(data), "--dataset", "synthetic", "--out", str(tmp_path / "ev"),
                 "--checkpoint", str(run / "last.pt"), "--head-epochs", "10"]) == 0
    assert json.loads((tmp_path / "ev" / "loso.json").read_text())["n_subjects"] == 2
    assert main(["visualize", "--checkpoint", str(run / "last.pt"), "--clip",
                 str(data / "sub01" / "EP01_01"), "--out", str(tmp_path / "viz")]) == 0
    assert (tmp_path / "viz" / "motion_maps.png").exists() and (tmp_path / "viz" / "motion_maps.mp4").exists()


def test_roc_auc_matches_sklearn():
    import numpy as np
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.random(500) > 0.7
    s = rng.random(500) + 0.5 * y
    s[:50] = 0.3  # ties
    assert abs(roc_auc(s, y) - roc_auc_score(y, s)) < 1e-12


def test_help_lists_commands_models_and_defaults(capsys):
    import pytest
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("demo", "synth", "pretrain", "evaluate", "finetune", "visualize"))
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "micronbert_tiny_nullkey" in out and "(default: micronbert_s8)" in out
    assert "{auto,triton,torch,reference}" in out and "(default: auto)" in out
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "casme3" in capsys.readouterr().out
