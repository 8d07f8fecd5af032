import json
import os

from micronbert.cli import main
from micronbert.maps import roc_auc


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    import functools

    import micronbert.data.loaders as loaders
    seen = []
    real = loaders.pretrain_loader
    spy = functools.wraps(real)(lambda clips, *a, **k: seen.extend(clips) or real(clips, *a, **k))
    monkeypatch.setattr(loaders, "pretrain_loader", spy)  # the clips pre-training sees
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--batch", "4", "--subjects", "3",
                 "--clips-per-class", "1", "--held-out", "1", "--corpus-faces", "2",
                 "--corpus-clips", "2"]) == 0
    said = capsys.readouterr().out  # short: no JSON dump; where the checkpoint is, what comes next
    assert len(said.splitlines()) < 40 and not any(x.startswith(("{", '  "')) for x in said.splitlines())
    assert f"checkpoint: {out / 'pretrain' / 'last.pt'}" in said and "next:" in said
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
    # pre-training: the corpus of other faces only, no clip of a subject that LOSO scores
    assert res["pretrain"]["clips"] == 2 * 2 == len(seen)
    assert all(os.path.relpath(c, out).startswith("corpus" + os.sep) for c in seen)
    faces = {int(os.path.relpath(c, out / "corpus").split(os.sep)[0][4:]) for c in seen}
    assert faces == {3, 4} and res["split_detail"]["loso_subjects"] == ["sub01", "sub02", "sub03"]
    assert "none of the 3 labeled subjects that LOSO scores" in res["split"]
    for k in ("accuracy", "uf1", "uar", "chance_uf1", "n_classes", "n_subjects"):
        assert k in res["loso"]
    # the motion benchmark by default: 6 motion classes + no_motion
    assert res["benchmark"] == "motion"
    assert res["loso"]["n_subjects"] == 3 and res["loso"]["n_classes"] == 7
    assert 0 <= res["loso"]["baselines"]["untrained"]["uf1"] <= 1
    table = (out / "results.md").read_text()
    assert "pixel difference" in table and "untrained model" in table and f"{res['map_auc']:.3f}" in table
    assert table.splitlines()[2].startswith("**Does it work?** The model is ")
    assert "1 - cos of pixel patches" in table and "Split: pre-training saw only" in table
    loso = json.loads((out / "loso.json").read_text())
    assert list(loso)[:2] == ["verdict", "chance"] and loso["verdict"][1:] in (out / "loso.md").read_text()
    for f in ("motion_maps.png", "confusion.png", "loss.png", "loso.json", "pretrain/last.pt",
              "pretrain/log.jsonl", "results.md", "results.png"):
        assert (out / f).stat().st_size > 0, f


def test_synth_pretrain_evaluate_visualize_commands(tmp_path, capsys, monkeypatch):
    import pytest
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--subjects", "2", "--clips-per-class", "1"]) == 0
    out = capsys.readouterr().out  # the next commands, with this folder
    assert f"micronbert pretrain --data {data} " in out and f"micronbert evaluate --data {data} " in out
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"steps": 2, "batch": 2, "warmup": 1, "ckpt_every": 1}))
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--model", "micronbert_tiny",
                 "--config", str(conf), "--steps", "3"]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the flag won over the config file
    assert (run / "loss.png").stat().st_size > 0
    # resume without repeating --model (the default is micronbert_s8): the file's config is used
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--resume", str(run / "last.pt"),
                 "--config", str(conf), "--steps", "4", "--backend", "reference"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
    # no --dataset: the layout of `micronbert synth` is detected
    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--checkpoint", str(run / "last.pt"), "--head-epochs", "10"]) == 0
    assert "the synthetic layout" in capsys.readouterr().err
    # the wrong layout named by hand: one clear error naming the right one
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(data), "--dataset", "casme2", "--out", str(tmp_path / "ev2"),
              "--checkpoint", str(run / "last.pt")])
    assert "looks like --dataset synthetic" in capsys.readouterr().err
    # the memory guard refuses on a machine with 1 MiB free; --no-memory-check runs anyway
    import micronbert.memory as memory
    monkeypatch.setattr(memory, "available_bytes", lambda device: (1 << 20, "free (test)"))
    args = ["pretrain", "--data", str(data), "--out", str(tmp_path / "r2"), "--model", "micronbert_tiny",
            "--steps", "1", "--batch", "2"]
    with pytest.raises(SystemExit):
        main(args)
    assert "micronbert: error: pretrain: " in capsys.readouterr().err
    assert main(args + ["--no-memory-check"]) == 0
    monkeypatch.undo()  # the machine's real memory again (visualize checks it too)
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
    out = " ".join(out.split())
    assert "micronbert_tiny_nullkey" in out and "default: micronbert_tiny on a CPU" in out
    assert "micronbert_s8 (the paper's) on CUDA" in out and "(default: 0)" in out  # --seed, --min-lr
    assert "{auto,triton,torch,reference}" in out and "(default: auto)" in out
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "casme3" in capsys.readouterr().out


def test_help_documents_on_error_finetune_and_memory_check(capsys):
    import pytest
    for cmd, words in (("evaluate", ("unreadable clip or sheet row", "(default: detected", "--data DATA dataset root --dataset")),
                       ("finetune", ("fine-tuned end to end per fold", "--freeze", "--save-models")),
                       ("pretrain", ("--no-memory-check", "(default: 50)"))):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert all(w in out for w in words), (cmd, words)
    main([])
    out = capsys.readouterr().out
    assert "fine-tuned end to end" in out and "linear probe" in out


def test_a_warmup_longer_than_the_run_is_capped(monkeypatch, capsys, tmp_path):
    import micronbert.cli as cli
    from micronbert.train import cosine_lr
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "pretrain", seen.append)
    assert main(["pretrain", "--data", "d", "--out", str(tmp_path / "o"), "--steps", "3"]) == 0
    assert "--warmup 50 is longer than --steps 3" in capsys.readouterr().err
    # the flag stays as given (a resume compares it), the schedule caps it: peak at the last step
    assert seen[0].warmup == 50 and cosine_lr(2, 3, 1.0, seen[0].warmup) == 1.0


def test_memory_guard_refuses_what_cannot_fit_and_names_the_flags(tmp_path, capsys, monkeypatch):
    import pytest

    import micronbert.memory as memory
    from micronbert import create_model
    # the real machine: micronbert_s8 at a batch no machine here holds
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--batch", "100000",
              "--model", "micronbert_s8"])
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and msg.startswith("micronbert: error: pretrain: ")
    for w in ("micronbert_s8", "--batch 100000", "GB", "--accum", "--model micronbert_tiny",
              "--no-memory-check"):
        assert w in msg, w
    assert not (tmp_path / "o").exists()  # refused before anything was written
    # the estimate: grows with the batch, counts the materialised attention of "reference"
    m = create_model("micronbert_tiny")
    e8, e32 = (memory.estimate_training_bytes(m, b) for b in (8, 32))
    assert memory.parameter_bytes(m) + memory.RUNTIME_BYTES < e8 < e32
    assert memory.estimate_training_bytes(create_model("micronbert_tiny", backend="reference"), 8) > e8
    assert memory.check_fits(m, 8, "cpu", available=e8 + 1, log=open(os.devnull, "w")) == e8
    per = (e32 - e8) / 24
    with pytest.raises(MemoryError, match="--batch 4 --accum 2"):  # 5 of 8 fit: 2 micro-batches of 4
        memory.check_fits(m, 8, "cpu", available=int(e8 - 3 * per) + 1)


def test_the_cpu_pretraining_line_of_the_readme_fits_this_machine():
    """README's CPU line (micronbert_tiny, --batch 8) passes the guard with room to spare."""
    import micronbert.memory as memory
    from micronbert import create_model
    free, _ = memory.available_bytes("cpu")
    assert memory.estimate_training_bytes(create_model("micronbert_tiny"), 8) < min(free, 2 << 30)


def test_setup_installs_only_what_the_demo_needs_by_default(tmp_path):
    """tools/setup.sh without an argument installs [cli] (not the test stack); `test`
    installs [test]; run against a stub python that records its calls."""
    import shutil
    import subprocess
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / "tools").mkdir()
    shutil.copy(os.path.join(repo, "tools", "setup.sh"), tmp_path / "tools" / "setup.sh")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\n')
    stub.chmod(0o755)
    for arg, want, not_want in (([], ".[cli]", "[test]"), (["test"], ".[test]", "[cli]")):
        (stub.parent / "calls").write_text("")
        subprocess.run(["bash", str(tmp_path / "tools" / "setup.sh"), *arg], check=True, timeout=60)
        installs = [c for c in (stub.parent / "calls").read_text().splitlines() if " install " in c]
        assert any(want in c for c in installs) and not any(not_want in c for c in installs), installs
    readme = open(os.path.join(repo, "README.md")).read()
    ci = open(os.path.join(repo, ".ci", "run")).read()
    assert "bash tools/setup.sh && .venv/bin/micronbert demo" in readme
    test_line = [ln for ln in ci.splitlines() if ln.startswith("bash tools/setup.sh test")][0]
    assert test_line in readme  # CI runs exactly the README's test command


def test_layout_detection_names_each_dataset_or_asks_for_dataset(tmp_path):
    import pytest

    from micronbert.data.annotations import detect_dataset
    from micronbert.data.io import DataError
    for name, make in (("synthetic", "CASME2-coding-synthetic.xlsx"), ("casme2", "CASME2-coding-20140508.xlsx"),
                       ("samm", "SAMM_Micro_FACS_Codes_v2.xlsx"), ("smic", "s1/micro/negative/s1_ne_01/"),
                       ("casme3", "CAS(ME)3_part_A_v2.xlsx")):
        root = tmp_path / name
        (root / make).parent.mkdir(parents=True, exist_ok=True)
        if make.endswith("/"):
            (root / make).mkdir()
        else:
            (root / make).write_bytes(b"")
        assert detect_dataset(str(root)) == name
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="pass --dataset"):
        detect_dataset(str(tmp_path / "empty"))


def test_flag_defaults_are_the_config_dataclasses():
    """pretrain's and finetune's defaults are TrainConfig's and FinetuneConfig's (no drift)."""
    from micronbert.cli.parser import build_parser
    from micronbert.recognition.finetune import FinetuneConfig
    from micronbert.train import TrainConfig
    _, sub, _ = build_parser()
    for k in ("steps", "lr", "min_lr", "warmup", "weight_decay", "accum", "ema", "ckpt_every", "keep"):
        assert sub["pretrain"].get_default(k) == getattr(TrainConfig(), k), k
    for k in ("epochs", "batch", "lr", "min_lr", "warmup_epochs", "layer_decay", "weight_decay"):
        assert sub["finetune"].get_default(k) == getattr(FinetuneConfig(), k), k


def test_pretrain_loader_is_sized_by_the_models_config(tmp_path):
    """The one loader factory of pretrain and demo: frames at the model's size (the demo
    of micronbert_s8 feeds 224 px, not the synthetic set's 64)."""
    from micronbert.config import get_config
    from micronbert.data.loaders import pretrain_loader
    from micronbert.data.pairs import find_clips
    from micronbert.data.synthetic import write_synthetic_dataset
    clips = find_clips(write_synthetic_dataset(str(tmp_path / "d"), n_subjects=1, clips_per_class=1,
                                               progress=False))
    for name, px in (("micronbert_tiny", 64), ("micronbert_s8", 224)):
        cfg = get_config(name)
        batch = next(iter(pretrain_loader(clips, cfg, batch=2, workers=1, prefetch=0)))
        assert tuple(batch["frame_t"].shape) == (2, 3, px, px), name
        assert tuple(batch["swap_mask"].shape) == (2, cfg.num_patches), name
