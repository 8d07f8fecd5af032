"""Issue 14, runs and messages: run folders that lose nothing (overwrite protection, a lock,
stale temporary files, confirmed finite checkpoints, --keep, resume checks, log truncation,
writable and full output folders), checkpoints told apart by content, and CLI errors as one
line naming the flag or file. Tiny models, tiny images, 1-3 steps."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from micronbert import cli, create_model, load_checkpoint, save_checkpoint
from micronbert.checkpoint import load_model
from micronbert.config import get_config
from micronbert.data.pairs import PairLoader, find_clips
from micronbert.data.synthetic import write_synthetic_dataset
from micronbert.runs import RunLock, non_finite
from micronbert.train import ConfigMismatch, NonFiniteLoss, TrainConfig, save_run, setup_run, train

import authors_ref as A


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(str(root), n_subjects=2, clips_per_class=1, progress=False)
    return root


TINY = ["--model", "micronbert_tiny", "--backend", "torch", "--batch", "2", "--warmup", "1",
        "--workers", "1", "--prefetch", "0"]


def _pretrain(data, out, *extra):
    return cli.main(["pretrain", "--data", str(data), "--out", str(out), *TINY, *extra])


def _fails(capsys, argv, *needles, code=1):
    """main(argv) ends with one line `micronbert...: error: ...` holding every needle, no traceback."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("micronbert") and ": error: " in last, err
    assert "Traceback" not in err
    for n in needles:
        assert n in last, (n, last)
    return last


def _loader(data, batch=2, **kw):
    return PairLoader(find_clips(str(data)), 64, batch, 8, (1, 4), seed=1, samples_per_epoch=8,
                      workers=1, prefetch=0, **kw)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return create_model("micronbert_tiny", backend="torch")


# ------------------------------------------------------------------ run folders
def test_folder_with_a_run_is_refused_unless_overwrite(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(data, out, "--steps", "1") == 0
    before = (out / "last.pt").read_bytes()
    _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", "1"],
           "already holds a run", "--resume", "--overwrite")
    assert (out / "last.pt").read_bytes() == before  # untouched
    assert _pretrain(data, out, "--steps", "2", "--overwrite") == 0
    aside = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "last.pt").read_bytes() == before
    assert len((aside[0] / "log.jsonl").read_text().splitlines()) == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # the new run's only


def test_lock_stops_a_second_run_and_a_stale_lock_is_replaced(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", "1"],
           "in use by another run", f"pid {os.getpid()}")
    assert not (out / "last.pt").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    assert _pretrain(data, out, "--steps", "1") == 0
    assert "stale lock" in capsys.readouterr().err
    assert not (out / ".lock").exists()  # removed at exit
    lock = RunLock(str(out)).acquire()  # O_EXCL: a second one in the same folder fails
    with pytest.raises(Exception, match="in use by another run"):
        RunLock(str(out)).acquire()
    lock.release()
    assert not (out / ".lock").exists()


def test_stale_temporary_files_are_removed_at_start(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-killed.pt").write_bytes(b"half a checkpoint")
    assert _pretrain(data, out, "--steps", "1") == 0
    assert not (out / ".tmp-killed.pt").exists()
    assert ".tmp-killed.pt" in capsys.readouterr().err


def test_interrupted_save_removes_its_temporary_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path / "last.pt"), _tiny())
    assert os.listdir(tmp_path) == []


def test_divergence_names_the_last_checkpoint_whose_loss_was_finite(data, tmp_path):
    out = str(tmp_path)
    train(_tiny(), _loader(data), steps=2, out_dir=out, lr=1e-3, warmup=1, progress=False, ckpt_every=1)
    with pytest.raises(NonFiniteLoss, match=r"last good checkpoint is .*last\.pt \(after step 2\)"):
        train(_tiny(), _loader(data), steps=10, out_dir=out, lr=1e6, warmup=1, progress=False,
              ckpt_every=1, resume=os.path.join(out, "last.pt"), allow_config_change=True)
    assert not os.path.exists(os.path.join(out, "pending.pt"))
    good, ck = load_checkpoint(os.path.join(out, "last.pt"))
    assert ck["step"] == 2  # not step 3, whose weights (~1e6) gave the NaN
    rec = train(good, _loader(data), steps=3, out_dir=out, lr=1e-3, warmup=1, progress=False,
                resume=os.path.join(out, "last.pt"), allow_config_change=True)
    assert len(rec) == 1 and np.isfinite(rec[0]["loss"])  # resuming from it does not diverge


def test_non_finite_weights_or_optimizer_state_are_never_saved(data, tmp_path):
    model = _tiny()
    run = setup_run(model, _loader(data), TrainConfig(steps=2, warmup=1), str(tmp_path), device="cpu")
    p = model.decoder_pred.bias
    run.opt.state[p] = {"exp_avg": torch.full_like(p, float("nan")), "step": torch.tensor(1.0)}
    assert non_finite(model, run.opt) == ["optimizer[decoder_pred.bias].exp_avg"]
    with pytest.raises(NonFiniteLoss, match=r"exp_avg.*no good checkpoint"):
        save_run(run, 1, final=True)
    assert not (tmp_path / "last.pt").exists()
    run.log.close()


def test_resume_lists_changed_settings_and_needs_allow_config_change(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(data, out, "--steps", "1") == 0
    argv = ["pretrain", "--data", str(data), "--out", str(out), *TINY[2:], "--resume",
            str(out / "last.pt"), "--steps", "2"]
    line = _fails(capsys, argv + ["--lr", "1e-3", "--batch", "4", "--overrides", '{"poi_mask": "soft"}',
                                  "--model", "micronbert_tiny"],
                  "lr: 0.00015 -> 0.001", "global_batch: 2 -> 4", "model.poi_mask: 'gate' -> 'soft'",
                  "--allow-config-change")
    assert "steps" not in line  # a longer run is allowed (the schedule is stretched)
    with pytest.raises(ConfigMismatch, match="accum: 1 -> 2"):
        train(_tiny(), _loader(data), steps=2, out_dir=str(tmp_path / "api"), accum=2,
              resume=str(out / "last.pt"), warmup=1, progress=False)
    assert cli.main(argv + ["--lr", "1e-3", "--allow-config-change"]) == 0
    # the model config comes from the checkpoint when --model is not given (default s8)
    assert cli.main(["pretrain", "--data", str(data), "--out", str(out), "--backend", "torch", "--batch",
                     "2", "--warmup", "1", "--lr", "1e-3", "--resume", str(out / "last.pt"),
                     "--steps", "3"]) == 0


def test_keep_k_and_resume_truncates_the_log_to_the_resumed_step(data, tmp_path):
    out = tmp_path / "run"
    assert _pretrain(data, out, "--steps", "3", "--ckpt-every", "1", "--keep", "2") == 0
    names = sorted(os.listdir(out))  # --keep 2: the last two step checkpoints, and last.pt
    assert [n for n in names if n.startswith("step-")] == ["step-0000002.pt", "step-0000003.pt"]
    assert load_checkpoint(str(out / "step-0000002.pt"))[1]["step"] == 2
    assert load_checkpoint(str(out / "last.pt"))[1]["step"] == 3
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.')  # a record cut by a kill
    assert _pretrain(data, out, "--steps", "3", "--resume", str(out / "step-0000002.pt")) == 0
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # step 2 once (run again), the cut record gone


def test_unwritable_output_folder_fails_at_once(data, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: the kernel's answer to everyone else
        import micronbert.runs as runs
        real = runs.tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if str(dir).startswith(str(ro)):
                raise PermissionError(13, "Permission denied", dir)
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(runs.tempfile, "mkstemp", mkstemp)
    ck = tmp_path / "ck.pt"
    save_checkpoint(str(ck), _tiny())
    frames = data / "sub01" / "EP01_01"
    for argv in (["pretrain", "--data", str(data), *TINY, "--steps", "1"],
                 ["evaluate", "--data", str(data), "--dataset", "synthetic", "--checkpoint", str(ck)],
                 ["visualize", "--checkpoint", str(ck), "--clip", str(frames)],
                 ["synth"], ["demo"]):
        _fails(capsys, argv + ["--out", str(ro / "out")], "not writable", str(ro / "out"))
    ro.chmod(0o755)


def test_full_disk_says_no_space_left_with_the_path(data, tmp_path, capsys, monkeypatch):
    import micronbert.checkpoint as C
    real = C.tempfile.mkstemp

    def full(*a, dir=None, **k):  # the checkpoint's temporary file lies on a full disk
        fd, name = real(*a, dir=dir, **k)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name
    monkeypatch.setattr(C.tempfile, "mkstemp", full)
    out = tmp_path / "run"
    _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", "1"],
           "No space left on device", str(out / "last.pt"))
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


# ------------------------------------------------------------------ checkpoints by content
def test_our_damaged_checkpoint_is_reported_not_loaded_as_the_authors(tmp_path, capsys):
    good = tmp_path / "good.pt"
    save_checkpoint(str(good), _tiny())
    ck = torch.load(good, weights_only=True)
    cases = {"unknown": ({**ck, "config": {**ck["config"], "bogus_field": 1}}, "bogus_field"),
             "missing": ({**ck, "model": {k: v for k, v in ck["model"].items() if k != "att.proj.bias"}},
                         "missing keys ['att.proj.bias']"),
             "shape": ({**ck, "config": {**ck["config"], "decoder_embed_dim": 64}}, "mis-shaped keys"),
             "no marker": ({k: v for k, v in ck.items() if k != "format"}, "format None")}
    for name, (obj, needle) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        with pytest.raises(Exception, match=__import__("re").escape(needle)):
            load_model(str(path))
        _fails(capsys, ["visualize", "--checkpoint", str(path), "--clip", "x", "--out", str(tmp_path / "v")],
               str(path), needle)
    sd = A.make_authors_state_dict(dino=False)  # the authors' files still load, as theirs
    A.save_authors_checkpoint(tmp_path / "theirs.pth", sd, True)
    assert load_model(str(tmp_path / "theirs.pth")).config.dma_role == "official"
    assert load_model(str(good)).config.dma_role == "paper"


# ------------------------------------------------------------------ messages
def _capture(monkeypatch, name):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, name, lambda args: seen.setdefault("args", args))
    return seen


def test_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["visualize", "--checkpoint", str(tmp_path / "nope.pt"), "--clip", "x", "--out", str(tmp_path)]
    _fails(capsys, argv, "checkpoint not found", str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError):
        cli.main(argv + ["--debug"])
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug"] + argv)


def test_bad_flag_values_are_one_clear_line(data, tmp_path, capsys):
    base = ["pretrain", "--data", str(data), "--out", str(tmp_path / "r"), *TINY, "--steps", "1"]
    _fails(capsys, base + ["--accum", "0"], "--accum 0", code=2)
    _fails(capsys, base + ["--ckpt-every", "0"], "--ckpt-every 0", code=2)
    _fails(capsys, base + ["--samples-per-epoch", "1"], "--samples-per-epoch 1", "--batch 2", code=2)
    _fails(capsys, base + ["--overrides", '{"patch_size": 0}'], "patch_size must be an integer >= 1", code=2)
    _fails(capsys, base + ["--overrides", '{"embed_dim": 2}'], "embed_dim (2) must be divisible", code=2)
    _fails(capsys, base + ["--overrides", "{bad"], "--overrides", code=2)
    _fails(capsys, base + ["--delta", "3", "1"], "--delta 3 1", code=2)
    _fails(capsys, base + ["--accum", "x"], "--accum", code=2)  # argparse's own, one line too
    assert not (tmp_path / "r" / "log.jsonl").exists()


def test_api_settings_are_validated(data, tmp_path):
    for kw in (dict(accum=0), dict(ckpt_every=0), dict(keep=0)):
        with pytest.raises(ValueError, match=list(kw)[0]):
            TrainConfig(**kw)
    with pytest.raises(ValueError, match="no full batch per epoch"):  # was a bare StopIteration
        train(_tiny(), PairLoader(find_clips(str(data)), 64, 4, samples_per_epoch=2), steps=1,
              out_dir=str(tmp_path), progress=False)
    for kw, needle in ((dict(patch_size=0), "patch_size"), (dict(num_heads=0), "num_heads"),
                       (dict(embed_dim=0), "embed_dim"), (dict(img_size=60), "not divisible"),
                       (dict(decoder_num_heads=3), "decoder_embed_dim")):
        with pytest.raises(ValueError, match=needle):
            get_config("micronbert_tiny", **kw)
    assert get_config("micronbert_tiny", patch_size=np.int64(8)).patch_size == 8


def test_missing_tensorboard_names_the_extra(data, tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a))
    _fails(capsys, ["pretrain", "--data", str(data), "--out", str(tmp_path / "r"), *TINY, "--steps", "1",
                    "--tensorboard"], '".[tensorboard]"', code=2)
    assert not (tmp_path / "r" / "log.jsonl").exists()


def test_config_file_does_not_beat_a_flag_equal_to_its_default(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, "pretrain")
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"seed": 5, "batch": 4, "lr": 0.5}))
    base = ["pretrain", "--data", "d", "--out", str(tmp_path / "r"), "--config", str(conf)]
    assert cli.main(base + ["--seed", "0", "--batch=64"]) == 0  # both equal their defaults
    a = seen.pop("args")
    assert (a.seed, a.batch, a.lr) == (0, 64, 0.5)
    assert cli.main(base) == 0
    a = seen.pop("args")
    assert (a.seed, a.batch, a.lr) == (5, 4, 0.5)


def test_config_file_values_are_checked(tmp_path, capsys):
    conf = tmp_path / "c.json"
    base = ["pretrain", "--data", "d", "--out", str(tmp_path / "r"), "--config", str(conf)]
    for bad, needle in (({"accum": 0}, "--accum 0"), ({"steps": "3"}, "--steps '3'"),
                        ({"model": "nope"}, "model 'nope' is not one of"), ({"bogus": 1}, "unknown setting")):
        conf.write_text(json.dumps(bad))
        _fails(capsys, base, needle, code=2)


def test_visualize_takes_image_files_and_refuses_fps_0(data, tmp_path, capsys):
    from PIL import Image
    frames = sorted((data / "sub01" / "EP01_01").iterdir())
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.open(frames[0]).save(a)
    Image.open(frames[3]).save(b)
    ck = tmp_path / "ck.pt"
    save_checkpoint(str(ck), _tiny())
    assert cli.main(["visualize", "--checkpoint", str(ck), "--backend", "torch", "--frame-a", str(a),
                     "--frame-b", str(b), "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "motion_maps.png").stat().st_size > 0
    for fps in ("0", "-3"):
        _fails(capsys, ["visualize", "--checkpoint", str(ck), "--clip", str(frames[0].parent),
                        "--fps", fps, "--out", str(tmp_path / "w")], f"--fps {fps}", code=2)
    assert not (tmp_path / "w" / "motion_maps.mp4").exists()


# ------------------------------------------------------------------ issue 24: the lock, resume
def _race_for_the_lock(folder, start, attempted, wins):
    """One contender: take the lock at ``start``, hold it until every contender has tried."""
    from micronbert.runs import RunError
    start.wait()
    lock = None
    try:
        lock = RunLock(folder).acquire()
        with wins.get_lock():
            wins.value += 1
    except RunError:
        pass
    attempted.wait()
    if lock is not None:
        lock.release()


def test_stale_lock_taken_over_by_many_processes_at_once_has_one_holder(tmp_path, capfd):
    import multiprocessing as mp
    ctx, n, rounds = mp.get_context("fork"), 8, 40
    for r in range(rounds):
        folder = tmp_path / f"r{r}"
        folder.mkdir()  # a stale lock as kill -9 leaves it (older format: no flock field)
        (folder / ".lock").write_text(json.dumps({"pid": 2 ** 31 - 1, "host": os.uname().nodename}))
        start, attempted, wins = ctx.Barrier(n), ctx.Barrier(n), ctx.Value("i", 0)
        procs = [ctx.Process(target=_race_for_the_lock, args=(str(folder), start, attempted, wins))
                 for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0] * n
        assert wins.value == 1, f"round {r}: {wins.value} processes held the lock at once"
        assert not (folder / ".lock").exists()  # the holder removed it
    # a holder killed with -9 leaves its file, yet the kernel released the flock: taken over
    folder = tmp_path / "killed"
    folder.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from micronbert.runs import "
                              "RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); "
                              "time.sleep(60)", str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match=f"in use by another run \\(pid {child.pid}"):
        RunLock(str(folder)).acquire()
    child.kill()
    child.wait()
    lock = RunLock(str(folder)).acquire()
    assert "stale lock" in capfd.readouterr().err
    lock.release()


def test_resume_from_another_folder_into_a_run_is_refused_unless_overwrite(data, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _pretrain(data, a, "--steps", "1") == 0
    assert _pretrain(data, b, "--steps", "2", "--lr", "1e-3") == 0
    before = {n: (b / n).read_bytes() for n in ("last.pt", "log.jsonl")}
    argv = ["pretrain", "--data", str(data), "--out", str(b), *TINY, "--steps", "2",
            "--resume", str(a / "last.pt")]
    _fails(capsys, argv, "already holds another run", "--overwrite")
    assert {n: (b / n).read_bytes() for n in before} == before  # B untouched
    assert cli.main(argv + ["--overwrite"]) == 0  # B moved aside, A continued in b
    aside = [p for p in b.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and {n: (aside[0] / n).read_bytes() for n in before} == before
    assert [json.loads(x)["step"] for x in (b / "log.jsonl").read_text().splitlines()] == [1]
    assert load_checkpoint(str(b / "last.pt"))[1]["step"] == 2


def test_divergence_advice_before_any_checkpoint_is_what_the_next_run_accepts(data, tmp_path, capsys):
    out = tmp_path / "run"
    line = _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", "6",
                           "--lr", "1e6", "--ckpt-every", "100"], "no good checkpoint", "--overwrite")
    assert not (out / "last.pt").exists() and (out / "log.jsonl").exists()
    # without the advised --overwrite: the refusal names no --resume of a file that is not there
    refused = _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", "1"],
                     "already holds a run", "--overwrite")
    assert "--resume" not in refused, refused
    assert "--lr" in line and _pretrain(data, out, "--steps", "1", "--lr", "1e-3", "--overwrite") == 0


def test_resume_with_steps_at_or_below_the_checkpoint_is_an_error(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(data, out, "--steps", "2") == 0
    before = (out / "log.jsonl").read_text()
    for steps in ("1", "2"):
        _fails(capsys, ["pretrain", "--data", str(data), "--out", str(out), *TINY, "--steps", steps,
                        "--resume", str(out / "last.pt")], "at step 2", f"--steps {steps}",
               "nothing to run")
    assert (out / "log.jsonl").read_text() == before
