"""Issue 24, the rest: one run-folder contract for every command (runs.claim_run_folder via
cli.main), skip mode and warnings that tell the truth (spot, loso, the pre-training loader),
every flag and --config value checked before work, one error format."""
import errno
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from micronbert import cli, runs
from micronbert.cli.parser import build_parser
from micronbert.data.io import DataError, read_frames
from micronbert.runlock import RunError, RunLock

COMMANDS = ("pretrain", "finetune", "evaluate", "spot", "synth", "visualize", "demo")
# one output each command writes (runs.OUTPUTS), as a rerun would find it
OUTPUT = {"pretrain": "loss.png", "finetune": "fold_s1.pt", "evaluate": "loso.json",
          "spot": "spot_results.json", "synth": "sub01", "visualize": "motion_maps.png",
          "demo": "results.json"}


def _argv(cmd, out, *extra):
    need = {"pretrain": ["--data", "d"], "finetune": ["--data", "d"], "evaluate": ["--data", "d"],
            "spot": ["--video", "v.mp4"], "visualize": ["--clip", "c"]}
    return [cmd, *need.get(cmd, []), "--out", str(out), *extra]


def _fails(capsys, argv, *needles, code=None):
    """main(argv) ends with exit 1 or 2 and one line `micronbert: error: ...` holding the needles."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code in ((1, 2) if code is None else (code,)), e.value.code
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("micronbert: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in last, (n, last)
    return last


@pytest.fixture
def fake(monkeypatch):
    """Every command replaced by one that writes its output (and checks that the folder's
    lock is held while it runs): the contract is main's, whatever the command does."""
    seen = []

    def make(cmd):
        def run(args):
            with pytest.raises(RunError, match="in use by another run"):
                RunLock(args.out).acquire()
            assert os.path.isfile(os.path.join(args.out, runs.MARK))
            p = os.path.join(args.out, OUTPUT[cmd])
            if cmd == "synth":
                os.makedirs(p, exist_ok=True)
            else:
                open(p, "w").write(f"{cmd} {len(seen)}")
            seen.append(cmd)
        return run
    for c in COMMANDS:
        monkeypatch.setitem(cli.COMMANDS, c, make(c))
    return seen


# ---------------------------------------------------------------- 1. the run-folder contract
@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_holds_the_lock_refuses_a_second_run_and_overwrite_moves_it_aside(cmd, fake, tmp_path,
                                                                                        capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(cmd, out)) == 0
    assert not (out / runs.MARK).exists() and not (out / ".lock").exists()
    first = (out / OUTPUT[cmd]).read_text() if cmd != "synth" else None
    open(out / ".tmp-half.png", "w").write("x")  # a killed write's temporary file
    _fails(capsys, _argv(cmd, out), "not empty" if cmd == "synth" else "already holds a run", OUTPUT[cmd],
           "--overwrite")
    assert fake == [cmd] and (out / ".tmp-half.png").exists()  # a refusal changes nothing
    assert cli.main(_argv(cmd, out, "--overwrite")) == 0
    assert not (out / ".tmp-half.png").exists()
    aside = list(tmp_path.glob("out.replaced-*")) if cmd == "synth" else list(out.glob("replaced-*"))
    assert len(aside) == 1 and (aside[0] / OUTPUT[cmd]).exists()
    if first is not None:
        assert (aside[0] / OUTPUT[cmd]).read_text() == first


def test_overwrite_moves_every_earlier_output_of_finetune_and_pretrain(fake, tmp_path):
    out = tmp_path / "ft"
    out.mkdir()
    for f in ("fold_a.pt", "fold_b.pt", "fold_a.jsonl", "loso.json", "folds.csv", "confusion.png"):
        (out / f).write_text("old")
    (out / "untrained").mkdir()
    (out / "untrained" / "fold_a.jsonl").write_text("old")
    (out / "notes.txt").write_text("mine")  # not a finetune output: left where it is
    assert cli.main(_argv("finetune", out, "--overwrite")) == 0
    aside = next(out.glob("replaced-*"))
    assert sorted(os.listdir(aside)) == ["confusion.png", "fold_a.jsonl", "fold_a.pt", "fold_b.pt",
                                         "folds.csv", "loso.json", "untrained"]
    assert (out / "notes.txt").read_text() == "mine" and not (out / "fold_b.pt").exists()
    pt = tmp_path / "pt"
    pt.mkdir()
    (pt / "loss.png").write_text("old")  # a loss curve alone is an earlier run
    assert cli.main(_argv("pretrain", pt, "--overwrite")) == 0
    assert (next(pt.glob("replaced-*")) / "loss.png").read_text() == "old"


def test_a_killed_run_is_detected_and_its_half_written_fold_log_named(fake, tmp_path, capsys):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "fold_s1.jsonl").write_text('{"epoch": 1}\n{"test": {"uf1": 0.5}}\n')
    (out / "fold_s2.jsonl").write_text('{"epoch": 1}\n{"epo')  # kill -9 in the middle
    (out / runs.MARK).write_text(json.dumps({"command": "finetune", "pid": 1}))
    assert runs.partial_outputs(str(out)) == ["fold_s2.jsonl"]
    _fails(capsys, _argv("finetune", out), "did not finish", "half-written: fold_s2.jsonl", "--overwrite")
    assert cli.main(_argv("finetune", out, "--overwrite")) == 0
    assert not (out / "fold_s2.jsonl").exists() and not (out / runs.MARK).exists()


def test_a_failed_run_keeps_its_mark_an_empty_one_leaves_nothing(monkeypatch, tmp_path, capsys):
    def half(args):
        open(os.path.join(args.out, "loso.json"), "w").write("{")
        raise DataError("the disk went away")
    monkeypatch.setitem(cli.COMMANDS, "evaluate", half)
    out = tmp_path / "ev"
    _fails(capsys, _argv("evaluate", out), "the disk went away")
    assert (out / runs.MARK).exists()
    _fails(capsys, _argv("evaluate", out), "did not finish")
    monkeypatch.setitem(cli.COMMANDS, "evaluate", lambda args: (_ for _ in ()).throw(DataError("no")))
    empty = tmp_path / "empty"
    _fails(capsys, _argv("evaluate", empty), "no")
    assert not empty.exists()  # refused before it wrote anything: no folder, no mark


def test_synth_twice_refuses_instead_of_mixing_two_datasets(tmp_path, capsys):
    out = tmp_path / "s"
    small = ["--subjects", "2", "--clips-per-class", "1", "--size", "32"]
    assert cli.main(["synth", "--out", str(out), *small]) == 0
    assert (out / "sub02").is_dir()
    _fails(capsys, ["synth", "--out", str(out), "--subjects", "1", "--clips-per-class", "1"], "not empty",
           "--overwrite")
    assert cli.main(["synth", "--out", str(out), "--subjects", "1", "--clips-per-class", "1", "--size", "32",
                     "--overwrite"]) == 0
    assert not (out / "sub02").exists()  # the first set's subject 2 is not left to be read
    assert (next(tmp_path.glob("s.replaced-*")) / "sub02").is_dir()


# ---------------------------------------------------------------- 2. skip mode and warnings
@pytest.fixture(scope="module")
def long_set(tmp_path_factory):
    data = tmp_path_factory.mktemp("long") / "data"
    assert cli.main(["synth", "--long", "--out", str(data), "--subjects", "2", "--videos-per-subject", "1",
                     "--seconds", "4", "--fps", "12", "--size", "48", "--nuisance", "none"]) == 0
    return data


def test_spot_skip_names_and_excludes_skipped_videos_and_errors_when_none_is_left(long_set, tmp_path):
    import shutil

    from micronbert.data.long_videos import load_long_annotations
    from micronbert.spot import spot_dataset
    data = tmp_path / "data"
    shutil.copytree(long_set, data)
    table = load_long_annotations("synthetic_long", str(data))
    victim, other = sorted(set(table.video), key=lambda v: -sum(table.video == v))[0], None
    other = next(v["video"] for v in table.attrs["videos"] if v["video"] != victim)
    gt_2 = sum(table.video == victim)
    assert gt_2 > 0
    for f in (data / "SAMM_longvideos" / victim).iterdir():
        f.write_bytes(b"not an image")
    res = spot_dataset("synthetic_long", str(data), str(tmp_path / "o"), method="flow", on_error="skip",
                       progress=False)
    assert res["videos"] == 1 and res["videos_skipped"] == [victim]
    assert any(victim in w and "skipped" in w for w in res["warnings"])
    assert sum(res["ground_truth"].values()) == len(table) - gt_2  # its intervals are not counted
    ov = res["default_p"]["mdmd_flow"]["overall"]
    assert ov["tp"] + ov["fn"] == len(table) - gt_2
    assert res["data_report"]["kinds"]["skipped video"]["count"] == 1
    for f in (data / "SAMM_longvideos" / other).iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(DataError, match="none of the 2 videos could be read"):
        spot_dataset("synthetic_long", str(data), str(tmp_path / "o2"), method="flow", on_error="skip",
                     progress=False)


def test_spot_on_noise_without_a_face_warns_in_the_summary_and_json(tmp_path, capsys):
    from micronbert.spot import spot_one
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(noise / f"{i:03d}.png")
    res = spot_one(str(noise), str(tmp_path / "o"), None, fps=12, method="flow", progress=False)
    assert res["face_found_chunks"] == 0 and "no face found" in res["warnings"][0]
    assert "no face found" in json.load(open(tmp_path / "o" / "spot.json"))["warnings"][0]
    assert "warning: no face found" in capsys.readouterr().err


def test_folds_whose_training_subjects_miss_a_held_out_class_are_flagged(tmp_path):
    from micronbert.recognition.folds import loso_splits
    from micronbert.recognition.report import missing_classes
    subjects = ["a", "a", "b", "b", "c", "c"]
    y = [0, 1, 0, 1, 0, 2]  # only c has class 2: its fold cannot predict it
    splits, _ = loso_splits(subjects, y, 3)
    assert missing_classes(splits, ["x", "y", "z"]) == [{"subject": "c", "classes": ["z"]}]


def test_skip_mode_never_redraws_a_known_bad_clip(tmp_path):
    from micronbert.data.pairs import PairLoader
    good = tmp_path / "good"
    good.mkdir()
    for i in range(6):
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(good / f"img{i + 1}.png")
    bad = []
    for i in range(60):
        bad.append(str(tmp_path / f"junk{i:02d}.mp4"))
        open(bad[-1], "wb").write(b"junk")
    loader = PairLoader([str(good)] + bad, 16, 4, delta=(1, 2), samples_per_epoch=8, on_error="skip",
                        prefetch=0)
    batches = list(loader)  # was: "50 consecutive draws failed"
    assert len(batches) == 2 and len(loader._bad) <= 60
    assert loader.report["skipped"] == len(loader._bad)  # each bad clip failed once, never again


# ---------------------------------------------------------------- 3. flags checked before work
BAD_FLAGS = [
    (["finetune", "--data", "d", "--crop-scale", "0", "0"], "--crop-scale"),
    (["finetune", "--data", "d", "--crop-scale", "0.9", "0.5"], "MIN must not exceed MAX"),
    (["finetune", "--data", "d", "--flip", "2"], "--flip"),
    (["finetune", "--data", "d", "--layer-decay", "-1"], "--layer-decay"),
    (["finetune", "--data", "d", "--warmup-epochs", "-5"], "--warmup-epochs"),
    (["finetune", "--data", "d", "--jitter", "nan"], "--jitter"),
    (["finetune", "--data", "d", "--rotate", "inf"], "--rotate"),
    (["finetune", "--data", "d", "--epochs", "0"], "--epochs"),
    (["finetune", "--data", "d", "--batch", "1"], "--batch"),
    (["spot", "--video", "v", "--p", "nan"], "--p"),
    (["spot", "--video", "v", "--p", "inf"], "--p"),
    (["spot", "--video", "v", "--p", "5"], "--p"),
]


@pytest.mark.parametrize("argv,needle", BAD_FLAGS)
def test_bad_flags_are_refused_before_any_work(argv, needle, fake, tmp_path, capsys):
    _fails(capsys, argv + ["--out", str(tmp_path / "o")], needle, code=2)
    assert fake == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize("conf,needle", [({"overwrite": "false"}, "--overwrite 'false': must be a JSON boolean"),
                                         ({"no_memory_check": "false"}, "JSON boolean"),
                                         ({"lr": float("nan")}, "NaN"), ({"ema": "Infinity"}, "--ema"),
                                         ({"delta": [1]}, "--delta"), ({"steps": 2.5}, "--steps")])
def test_config_values_are_checked_by_the_same_table(conf, needle, fake, tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(conf))
    _fails(capsys, _argv("pretrain", tmp_path / "o", "--config", str(p)), needle, code=2)
    assert fake == []


def test_spot_flow_size_and_synth_size_are_bounded_by_a_memory_estimate(fake, tmp_path, capsys, monkeypatch):
    import micronbert.memory as memory
    monkeypatch.setattr(memory, "available_bytes", lambda device: (8 << 30, "available RAM (test)"))
    _fails(capsys, _argv("spot", tmp_path / "o", "--flow-size", "5000", "--method", "flow"),
           "--flow-size 5000", "GB", "lower --flow-size", code=2)
    _fails(capsys, ["synth", "--out", str(tmp_path / "s"), "--size", "30000"], "--size 30000", code=2)
    assert fake == []
    assert cli.main(_argv("spot", tmp_path / "o", "--method", "flow")) == 0  # the default fits


def test_spot_refuses_a_video_whose_frames_cannot_fit(tmp_path, monkeypatch):
    import micronbert.memory as memory
    from micronbert.spot import spot_one
    clip = tmp_path / "big"
    clip.mkdir()
    for i in range(8):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(clip / f"{i}.png")
    monkeypatch.setattr(memory, "available_bytes", lambda device: (memory.RUNTIME_BYTES + 1000, "test"))
    with pytest.raises(DataError, match="big: 64x64 frames.*downscale"):
        spot_one(str(clip), str(tmp_path / "o"), None, fps=4, method="flow", progress=False)


def test_visualize_refuses_a_clip_that_cannot_fit_before_decoding_it(tmp_path, capsys, monkeypatch):
    import micronbert.memory as memory
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(clip / f"{i}.png")
    monkeypatch.setattr(memory, "available_bytes", lambda device: (memory.RUNTIME_BYTES + 100, "test"))
    _fails(capsys, ["visualize", "--clip", str(clip), "--model", "micronbert_tiny", "--out", str(tmp_path / "v")],
           "clip: 4 frames of 32x32 needs about", code=1)
    assert not (tmp_path / "v").exists()


def test_one_error_format_and_debug_shows_the_traceback(tmp_path, capsys):
    _fails(capsys, ["spot", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o"), "--method",
                    "flow"], "none.mp4")
    with pytest.raises(DataError):
        cli.main(["--debug", "spot", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o2"),
                  "--method", "flow"])
    assert cli.short("loss 0.123456789 after 3.14159265e-07 s") == "loss 0.1235 after 3.142e-07 s"
    assert len(cli.short("x" * 5000)) == cli.MAX_LINE


def test_a_full_disk_in_evaluate_names_the_file(tmp_path, monkeypatch):
    from micronbert.recognition import report

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(report.json, "dump", full)
    y = torch.tensor([0, 1, 0, 1])
    splits = [{"subject": s, "train": np.array(m), "test": ~np.array(m), "missing_classes": []}
              for s, m in (("a", [False, False, True, True]), ("b", [True, True, False, False]))]
    import pandas as pd
    table = pd.DataFrame({"subject": ["a", "a", "b", "b"]})
    with pytest.raises(OSError, match=r"cannot write .*loso.json: No space left"):
        report.write_loso(str(tmp_path), table, y, ["x", "y"], {"model": y.clone()}, splits, [], "probe")
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "loso.json").exists()


def test_mixed_frame_sizes_in_a_folder_name_the_file(tmp_path):
    from micronbert.spot.frames import iter_frames
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, s in enumerate((16, 16, 24, 16)):
        Image.fromarray(np.zeros((s, s, 3), np.uint8)).save(clip / f"img{i + 1}.png")
    with pytest.raises(DataError, match=r"img3.png: its size differs"):
        read_frames(str(clip))
    with pytest.raises(DataError, match=r"img3.png: a 24x24 frame"):
        list(iter_frames(str(clip)))


def test_every_command_has_overwrite_and_every_float_flag_is_bounded_or_checked():
    _, _, tables = build_parser()
    for cmd in COMMANDS:
        assert "--overwrite" in {f.name for f in tables[cmd]}, cmd
