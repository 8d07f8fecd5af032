"""The first hour (issue 27): defaults that fit the machine, untrained weights said out loud,
install hints that work from where the user is, help that shows every default."""
import argparse
import json

import pytest

from micronbert.cli import error_line, main


def test_install_hint_from_a_checkout_and_from_a_wheel(monkeypatch):
    import micronbert.install as inst
    hint = inst.install_hint("cli")
    assert inst.source_root() is not None  # the tests run from the checkout
    assert hint.startswith('pip install -e ".[cli]"') and inst.source_root() in hint
    assert "not on PyPI" not in hint  # only the wheel's hint says so
    monkeypatch.setattr(inst, "source_root", lambda: None)
    wheel = inst.install_hint("tensorboard")
    assert "[tensorboard]" in wheel and "not on PyPI" in wheel and "-e" not in wheel
    e = ModuleNotFoundError("No module named 'cv2'", name="cv2")
    assert "[cli]" in error_line(e) and "'cv2'" in error_line(e)


@pytest.mark.parametrize("cuda, want", [(False, "micronbert_tiny"), (True, "micronbert_s8")])
def test_model_default_fits_the_machine(monkeypatch, tmp_path, cuda, want):
    import torch

    import micronbert.cli as cli
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "visualize", seen.append)
    assert main(["visualize", "--clip", "c", "--out", str(tmp_path / "o")]) == 0
    assert seen[0].model == want
    assert main(["visualize", "--clip", "c", "--out", str(tmp_path / "o"), "--model", "micronbert_s8"]) == 0
    assert seen[1].model == "micronbert_s8"  # a model given is kept


def test_help_starts_here_and_shows_every_default(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("start here: micronbert demo")
    with pytest.raises(SystemExit):
        main(["pretrain", "-h"])
    out = " ".join(capsys.readouterr().out.split())
    for w in ("--min-lr MIN_LR final learning rate of the cosine (default: 0.0)",
              "seed of the samples and the model (default: 0)", "micronbert_tiny on a CPU"):
        assert w in out, w
    with pytest.raises(SystemExit):
        main(["evaluate", "-h"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: the dataset's own" in out and "--allow-untrained" in out


def _args(tmp_path, **kw):
    base = dict(cmd="evaluate", checkpoint=None, no_baselines=False, allow_untrained=False,
                model="micronbert_tiny", out=str(tmp_path))
    return argparse.Namespace(**{**base, **kw})


def test_evaluate_without_a_checkpoint_is_refused_unless_asked(tmp_path, capsys):
    from micronbert.cli.commands import refuse_double_untrained
    from micronbert.runs import UsageError
    with pytest.raises(UsageError, match="--allow-untrained"):
        refuse_double_untrained(_args(tmp_path))
    for kw in ({"allow_untrained": True}, {"no_baselines": True}, {"checkpoint": "c.pt"}):
        refuse_double_untrained(_args(tmp_path, **kw))
    # on the command line: refused before any data is read (the folder does not exist)
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "--allow-untrained" in capsys.readouterr().err


def test_untrained_weights_are_marked_in_result_files(tmp_path):
    from micronbert.cli.commands import mark_untrained
    (tmp_path / "loso.json").write_text(json.dumps({"uf1": 0.2}))
    (tmp_path / "loso.md").write_text("| table |\n")
    mark_untrained(_args(tmp_path), "loso.json", "loso.md", "absent.json")
    saved = json.loads((tmp_path / "loso.json").read_text())
    assert "UNTRAINED" in saved["weights"] and saved["uf1"] == 0.2
    assert (tmp_path / "loso.md").read_text().startswith("**WARNING: no --checkpoint")
    # after the verdict, which opens every result file
    (tmp_path / "v.json").write_text(json.dumps({"verdict": "v", "chance": {}, "uf1": 0.2}))
    (tmp_path / "v.md").write_text("# title\n\n**Does it work?** No.\n\n| table |\n")
    mark_untrained(_args(tmp_path), "v.json", "v.md")
    assert list(json.loads((tmp_path / "v.json").read_text()))[:3] == ["verdict", "chance", "weights"]
    md = (tmp_path / "v.md").read_text().splitlines()
    assert md[2] == "**Does it work?** No." and md[3].startswith("**WARNING: no --checkpoint")
    (tmp_path / "ok.json").write_text("{}")
    mark_untrained(_args(tmp_path, checkpoint="c.pt"), "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text()) == {}


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from micronbert.console import bar_on
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bar_on(True)

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", Tty())
    assert bar_on(True) and not bar_on(False)


def test_a_longer_resume_says_how_the_learning_rate_jumps():
    from micronbert.train import TrainConfig, cosine_lr, schedule_change
    tc = TrainConfig(steps=400, lr=1e-4, warmup=10, min_lr=0.0)
    line = schedule_change("runs/pt/last.pt", 200, 200, tc)
    was, now = cosine_lr(199, 200, 1e-4, 10), cosine_lr(200, 400, 1e-4, 10)
    assert now > 100 * was  # the jump the line is about
    assert f"from {was:.2g} (step 199 of 200) to {now:.2g} at step 200" in line


def test_score_png_names_the_ground_truth_only_where_there_is_one(tmp_path, monkeypatch):
    import numpy as np

    import micronbert.viz as viz
    labels = []
    real = viz._written
    monkeypatch.setattr(viz, "_written", lambda plt, fig, path: (
        labels.append(fig.axes[-1].get_xlabel()), real(plt, fig, path)))
    c = {"flow": np.linspace(0, 1, 30)}
    for gt in (None, [{"onset": 3, "offset": 6, "kind": "micro"}]):
        viz.save_score_curves(str(tmp_path / "s.png"), c, {}, {"flow": 0.5}, 10.0, gt)
    assert "no ground truth" in labels[0] and "strip" not in labels[0]
    assert "strip at the bottom: ground truth" in labels[1]
