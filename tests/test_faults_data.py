"""Bad data: every skip is counted and named, every error is a DataError naming the input,
no search goes on forever (issue 14, "data, skip mode, sheets")."""
import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from micronbert.data.annotations import label_of, load_annotations
from micronbert.data.faces import cached_face_box
from micronbert.data.io import DataError, read_frames, read_image, read_video, write_video
from micronbert.data.pairs import MAX_FAILED_DRAWS, PairLoader, find_clips
from micronbert.data.report import DataReport
from micronbert.data.synthetic import write_synthetic_dataset

CASME2_COLS = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"]


@contextmanager
def time_limit(seconds, what):
    """Fail (not hang) when the body runs longer than ``seconds``."""
    def stop(*_):
        raise TimeoutError(f"{what} ran longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    return write_synthetic_dataset(root, n_subjects=2, clips_per_class=1, progress=False)


def _clip(folder, numbers=range(1, 9), size=8):
    os.makedirs(folder, exist_ok=True)
    for n in numbers:
        Image.fromarray(np.full((size, size, 3), n * 20, np.uint8)).save(os.path.join(folder, f"img{n}.png"))
    return str(folder)


def _casme2(root, rows, clips=("EP01",)):
    """A CASME II layout: sub01/<clip>/img1..8.png and a sheet of ``rows`` (dicts or lists)."""
    for c in clips:
        _clip(os.path.join(root, "sub01", c))
    df = pd.DataFrame(rows, columns=CASME2_COLS) if rows else pd.DataFrame(columns=CASME2_COLS)
    df.to_excel(os.path.join(root, "CASME2-coding-test.xlsx"), index=False)
    return str(root)


def _truncated_avi(path, n=12):
    """An AVI whose header promises ``n`` frames but whose data stops after about half."""
    import av
    frames = np.random.default_rng(0).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    write_video(frames, path + ".full.avi", fps=10)
    with av.open(path + ".full.avi") as c:
        pos = [p.pos for p in c.demux(video=0) if p.size]
    with open(path + ".full.avi", "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:pos[n // 2]])  # cut at a packet boundary
    os.remove(path + ".full.avi")
    return path


# ---------------------------------------------------------------- 1. no readable clip
def test_skip_with_no_readable_clip_gives_up_with_a_clear_error(tmp_path):
    bad = []
    for i in range(3):
        bad.append(str(tmp_path / f"junk{i}.mp4"))
        open(bad[-1], "wb").write(b"junk" * 20)
    loader = PairLoader(bad, 16, 2, samples_per_epoch=8, on_error="skip", prefetch=0)
    with time_limit(20, "a loader without one readable clip"):
        with pytest.raises(DataError, match=r"no readable sample.*all 3 clips failed.*junk"):
            list(loader)


def test_skip_gives_up_after_consecutive_failed_draws(tmp_path):
    """Samples that fail one by one (a folder whose frames are all damaged, decoded two at a
    time) stop after MAX_FAILED_DRAWS draws, not never."""
    d = _clip(tmp_path / "damaged")
    for f in os.listdir(d):
        open(os.path.join(d, f), "wb").write(b"not a png")
    loader = PairLoader([d], 16, 2, samples_per_epoch=4, on_error="skip", cache_clips=0, prefetch=0)
    with time_limit(30, "draws over a damaged folder"):
        with pytest.raises(DataError, match=f"{MAX_FAILED_DRAWS} consecutive draws failed.*damaged"):
            list(loader)


def test_skip_report_stays_bounded_and_counts_everything(synth, tmp_path):
    bad = [str(tmp_path / f"junk{i}.mp4") for i in range(20)]
    for b in bad:
        open(b, "wb").write(b"junk")
    loader = PairLoader(find_clips(synth) + bad, 16, 4, samples_per_epoch=64, on_error="skip", prefetch=0)
    assert len(list(loader)) == 16
    assert loader.report["skipped"] > 10 and len(loader.report["errors"]) == 5
    assert loader.data_report.counts["skipped sample"] == loader.report["skipped"]
    assert len(loader.data_report.names["skipped sample"]) == 5
    assert len(loader._bad) <= 20  # each bad clip remembered once, not a growing list


# ---------------------------------------------------------------- 2. skip mode skips everywhere
@pytest.mark.parametrize("cache_clips", [64, 0])
def test_truncated_video_is_a_named_error_or_a_counted_skip(synth, tmp_path, cache_clips):
    cut = _truncated_avi(str(tmp_path / "cut.avi"))
    with pytest.raises(DataError, match="cut.avi"):
        read_video(cut, [0, 11])
    kw = dict(size=16, batch_size=4, delta=(1, 1), samples_per_epoch=32, cache_clips=cache_clips, prefetch=0)
    with pytest.raises(DataError, match="cut.avi.*(header promises 12 frames|truncated)"):
        for _ in PairLoader([cut], **kw):
            pass
    clips = find_clips(synth)[:2] + [cut]
    loader = PairLoader(clips, on_error="skip", **kw)
    assert len(list(loader)) == 8
    assert loader.report["skipped"] > 0 and "cut.avi" in loader.report["errors"][0]


def test_evaluate_skips_clips_that_do_not_decode_and_reports_sheet_repairs(synth, tmp_path):
    from micronbert import create_model
    from micronbert.recognition import evaluate
    root = str(tmp_path / "set")
    shutil.copytree(synth, root)
    sheet = os.path.join(root, "CASME2-coding-synthetic.xlsx")
    df = pd.read_excel(sheet)
    df["ApexFrame"] = df["ApexFrame"].astype(float)
    df.loc[0, "ApexFrame"] += 0.4  # a float frame number: repaired
    df.to_excel(sheet, index=False)
    t = load_annotations("synthetic", root)
    r = t.iloc[3]
    broken = sorted(os.listdir(r.path), key=lambda f: int(f[3:-4]))[r.apex_index]
    open(os.path.join(r.path, broken), "wb").write(b"junk")
    with pytest.raises(DataError, match=broken):
        evaluate(create_model("micronbert_tiny"), t, str(tmp_path / "raise"), t.attrs["classes"], epochs=2)
    torch.manual_seed(0)
    res = evaluate(create_model("micronbert_tiny"), t, str(tmp_path / "out"), t.attrs["classes"],
                   epochs=2, on_error="skip")
    assert res["n_clips"] == len(t) - 1
    saved = json.loads((tmp_path / "out" / "loso.json").read_text())["data_report"]
    assert saved == res["data_report"]
    assert saved["skipped"] == 1 and broken in saved["kinds"]["skipped clip"]["first"][0]
    assert saved["kinds"]["repaired float frame number"]["count"] == 1
    assert "row 2" in saved["kinds"]["repaired float frame number"]["first"][0]


@pytest.mark.parametrize("subject", ["abc", None])
def test_non_numeric_or_missing_subject_is_a_row_error_or_a_skip(tmp_path, subject):
    root = _casme2(tmp_path, [[1, "EP01", 1, 3, 6, "happiness"], [subject, "EP01", 1, 3, 6, "surprise"]])
    with pytest.raises(DataError, match=r"row 3: subject .* is not a subject number"):
        load_annotations("casme2", root)
    t = load_annotations("casme2", root, on_error="skip")
    assert len(t) == 1 and t.attrs["report"].counts == {"skipped row": 1}


def test_damaged_face_cache_is_a_counted_cache_miss(tmp_path, monkeypatch):
    from micronbert.data import faces
    found = []  # the detector is not what is tested: the cache is

    def detect(frames, margin=0.2, samples=5, name="clip"):
        found.append(name)
        return (2, 2, 30, 30)
    monkeypatch.setattr(faces, "clip_face_box", detect)
    d = _clip(tmp_path / "face", range(1, 4), size=32)
    cache = tmp_path / "boxes"
    box = cached_face_box(str(d), str(cache))
    assert box == (2, 2, 30, 30) and len(found) == 1
    (entry,) = cache.iterdir()
    for garbage in (b"\x00\xff garbage", b'{"box": [1, 2]}', b'{"box": [5, 5, 1, 1]}', b'{"nobox": 1}'):
        entry.write_bytes(garbage)
        report = DataReport()
        assert cached_face_box(str(d), str(cache), report=report) == box
        assert report.counts == {"repaired face cache (damaged file, recomputed)": 1}
        assert json.loads(entry.read_text())["box"] == list(box)  # rewritten
    assert len(found) == 5 and cached_face_box(str(d), str(cache)) == box and len(found) == 5
    entry.write_bytes(b"junk")
    loader = PairLoader([str(d)], 32, 2, samples_per_epoch=4, face_cache=str(cache), prefetch=0)
    assert len(list(loader)) == 2
    assert loader.data_report.counts == {"repaired face cache (damaged file, recomputed)": 1}


def test_dali_bad_jpeg_is_named_or_skipped(tmp_path, synth):
    pytest.importorskip("nvidia.dali")
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import dali_checks; dali_checks.bad_jpeg_skipped_or_named({str(tmp_path)!r}, {synth!r})"
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


# ---------------------------------------------------------------- 3. repairs counted and named
def test_every_sheet_repair_and_dropped_row_is_counted_and_named(tmp_path):
    rows = [[1, "EP01", 5, 3, 2, "happiness"],     # offset before onset -> last frame, apex -> middle
            [1, "EP02", 1, 8, 4, "surprise"],      # apex outside the clip -> middle
            [1, "EP03", 1, "x", "?", "disgust"],   # non-numeric apex and offset
            [1, "EP04", 1.0, 3.6, 6, "others"],    # a fractional apex
            [1, "EP05", 1, 3, 6, "fear"],          # casme2_5 has no fear: dropped
            [1, "EP06", 1, 3, 6, "repression"]]    # no folder: skipped
    root = _casme2(tmp_path, rows, clips=("EP01", "EP02", "EP03", "EP04", "EP05"))
    t = load_annotations("casme2", root, on_error="skip")
    rep = t.attrs["report"]
    assert rep.counts == {"repaired offset": 2, "repaired apex": 3, "repaired float frame number": 1,
                          "dropped row (not in the class map)": 1, "skipped row": 1}
    assert rep.skipped == 2 and rep.repaired == 6
    assert any("row 2 (EP01)" in n for n in rep.names["repaired offset"])
    assert "EP06" in rep.names["skipped row"][0] and "'fear'" in rep.names["dropped row (not in the class map)"][0]
    assert t.apex[3] == 4 and "3.6" in t.fixes[3]
    assert "2 repaired offset" in rep.line() and json.dumps(rep.as_dict())


# ---------------------------------------------------------------- 4. silently wrong, now loud
def test_missing_emotion_is_not_a_class_nan(tmp_path):
    root = _casme2(tmp_path, [[1, "EP01", 1, 3, 6, "happiness"], [1, "EP01", 1, 3, 6, None],
                              [1, "EP01", 1, 3, 7, "surprise"]])  # other frames: not a duplicate
    with pytest.raises(DataError, match="row 3: no emotion"):
        load_annotations("casme2", root, "own")
    t = load_annotations("casme2", root, "own", on_error="skip")
    assert t.attrs["classes"] == ["happiness", "surprise"] and "nan" not in set(t.emotion)
    assert t.attrs["report"].counts == {"skipped row": 1}


def test_synth_video_set_is_what_evaluate_reads(tmp_path, capsys):
    from micronbert.cli import main
    data = str(tmp_path / "v")
    assert main(["synth", "--out", data, "--video", "--subjects", "2", "--clips-per-class", "1"]) == 0
    t = load_annotations("synthetic", data)
    from micronbert.data.synthetic_motion import MOTION_CLASSES  # synth's default benchmark
    assert len(t) == 2 * len(MOTION_CLASSES) and all(p.endswith(".mp4") for p in t.path)
    assert t.attrs["report"].counts == {}
    r = t.iloc[0]
    assert read_frames(r.path, [r.onset_index, r.apex_index]).shape[0] == 2
    capsys.readouterr()
    assert main(["evaluate", "--data", data, "--dataset", "synthetic", "--out", str(tmp_path / "ev"),
                 "--model", "micronbert_tiny", "--head-epochs", "2", "--on-error", "skip",
                 "--allow-untrained"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "[evaluate] data: nothing skipped or repaired"
    saved = json.loads((tmp_path / "ev" / "loso.json").read_text())
    assert saved["n_clips"] == len(t) and saved["data_report"] == {"skipped": 0, "repaired": 0, "kinds": {}}


def test_header_only_sheet_is_a_clear_error(tmp_path):
    root = _casme2(tmp_path, [])
    with pytest.raises(DataError, match="CASME2-coding-test.xlsx: a header but no rows"):
        load_annotations("casme2", root)


def test_class_map_that_drops_every_row_names_itself_and_the_emotions(tmp_path):
    root = _casme2(tmp_path, [[1, "EP01", 1, 3, 6, "fear"], [1, "EP01", 1, 3, 7, "sadness"]])
    with pytest.raises(DataError, match=r"class map 'casme2_5' keeps none.*\['fear', 'sadness'\]"):
        load_annotations("casme2", root)
    assert load_annotations("casme2", root, "megc2019_3").label.tolist() == [0, 0]


def test_own_class_map_works_for_casme3_and_label_of_says_what_own_is(tmp_path):
    root = tmp_path / "A"
    _clip(root / "spNO.1" / "a" / "color")
    pd.DataFrame([["spNO.1", "a", 1, 3, 6, "AU4", 1, "Disgust"], ["spNO.1", "a", 2, 4, 7, "AU1", 2, "fear"]],
                 columns=["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
                 ).to_excel(root / "labels.xlsx", index=False)
    t = load_annotations("casme3", str(root), "own")
    assert t.attrs["classes"] == ["disgust", "fear"] and t.label.tolist() == [0, 1]
    with pytest.raises(ValueError, match="'own' has no fixed labels") as e:
        label_of("fear", "own")
    assert "unknown" not in str(e.value)
    with pytest.raises(ValueError, match="unknown class map 'bogus'"):
        load_annotations("casme3", str(root), "bogus")


def test_visualize_one_frame_clip_is_a_clear_error(tmp_path):
    from micronbert.cli import main
    clip = _clip(tmp_path / "one", numbers=[1], size=32)
    with pytest.raises(DataError, match="one: 1 frame; visualize needs a clip of at least 2"):
        main(["visualize", "--model", "micronbert_tiny", "--clip", clip, "--out", str(tmp_path / "o"),
              "--backend", "reference", "--debug"])  # --debug: the exception, not its one line


# ---------------------------------------------------------------- 6. property test
def _valid_png(path, rng):
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _damage(data, rng):
    """Random bytes, a truncation, or random bytes written over a part."""
    kind = rng.integers(3)
    if kind == 0 or not data:
        return rng.bytes(int(rng.integers(0, 400)))
    if kind == 1:
        return data[:int(rng.integers(0, len(data)))]
    i = int(rng.integers(0, len(data)))
    return data[:i] + rng.bytes(int(rng.integers(1, 64))) + data[i + 64:]


def _random_cell(rng, good):
    """The good value 3 times in 4, else a damaged one."""
    if rng.random() < 0.75:
        return good
    return [np.nan, "x", -3, 2.5, 10 ** 6, "", " 4 ", "/"][int(rng.integers(8))]


def _garbled_sheet(rng, root, n_rows):
    rows = []
    for _ in range(n_rows):
        rows.append([_random_cell(rng, 1), _random_cell(rng, "EP01"), _random_cell(rng, 2),
                     _random_cell(rng, 3), _random_cell(rng, 6),
                     _random_cell(rng, ["happiness", "surprise", "fear"][int(rng.integers(3))])])
    return _casme2(root, rows)


def _one_case(rng, tmp, i):
    """One random damaged input; returns (what it is, a callable that reads it, the name an
    error must carry, the expected row count or None)."""
    kind = ["image", "frames", "video", "sheet", "sheet_samm", "sheet_casme3", "face_cache"][i % 7]
    d = os.path.join(tmp, f"case{i}")
    os.makedirs(d)
    if kind == "image":
        p = os.path.join(d, "x.jpg")
        _valid_png(p, rng)
        data = open(p, "rb").read()
        open(p, "wb").write(_damage(data, rng))
        return kind, lambda: read_image(p), "x.jpg", None
    if kind == "frames":
        f = _clip(os.path.join(d, "clip"), range(1, 5))
        victim = os.path.join(f, f"img{int(rng.integers(1, 5))}.png")
        open(victim, "wb").write(_damage(open(victim, "rb").read(), rng))
        return kind, lambda: read_frames(f), "clip", None
    if kind == "video":
        p = os.path.join(d, "v" + [".mp4", ".avi", ".mkv"][int(rng.integers(3))])
        write_video(rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8), p, fps=10)
        open(p, "wb").write(_damage(open(p, "rb").read(), rng))
        return kind, lambda: read_video(p, [0, 5]), os.path.basename(p), None
    if kind == "sheet":
        n = int(rng.integers(2, 7))
        root = _garbled_sheet(rng, d, n)
        return kind, lambda: load_annotations("casme2", root, "megc2019_3", on_error="skip"), "xlsx", n
    if kind == "sheet_samm":
        _clip(os.path.join(d, "001", "001_1"))
        p = os.path.join(d, "SAMM_Micro_FACS_Codes_v2.xlsx")
        open(p, "wb").write(rng.bytes(300) if rng.integers(2) else b"PK\x03\x04" + rng.bytes(200))
        return kind, lambda: load_annotations("samm", d), "SAMM_Micro_FACS_Codes_v2.xlsx", None
    if kind == "sheet_casme3":
        _clip(os.path.join(d, "spNO.1", "a", "color"))
        n = int(rng.integers(2, 7))
        rows = [[_random_cell(rng, "spNO.1"), _random_cell(rng, "a"), _random_cell(rng, 1),
                 _random_cell(rng, 3), _random_cell(rng, 6), "AU1", 1, _random_cell(rng, "happy")]
                for _ in range(n)]
        pd.DataFrame(rows, columns=["Subject", "Filename", "Onset", "Apex", "Offset", "AU",
                                    "Objective class", "emotion"]).to_excel(os.path.join(d, "l.xlsx"), index=False)
        return kind, lambda: load_annotations("casme3", d, on_error="skip"), "l.xlsx", n
    # a face cache entry of random bytes: a counted cache miss (the box comes from the frames)
    pytest.importorskip("cv2")
    from micronbert.data import faces
    clip = _clip(os.path.join(d, "clip"), range(1, 3), size=32)
    cache = os.path.join(d, "cache")
    report = DataReport()
    faces_box = (2, 2, 30, 30)
    orig = faces.clip_face_box
    faces.clip_face_box = lambda *a, **k: faces_box  # no face detector needed: the cache is tested
    try:
        cached_face_box(clip, cache)
    finally:
        faces.clip_face_box = orig
    (entry,) = os.listdir(cache)
    open(os.path.join(cache, entry), "wb").write(rng.bytes(int(rng.integers(0, 100))))

    def read():
        faces.clip_face_box = lambda *a, **k: faces_box
        try:
            box = cached_face_box(clip, cache, report=report)
        finally:
            faces.clip_face_box = orig
        assert box == faces_box and sum(report.counts.values()) == 1
        return box
    return kind, read, "clip", None


def test_property_random_damage_ends_in_a_named_error_or_a_counted_skip(tmp_path):
    rng = np.random.default_rng(20261202)
    outcomes = {"ok": 0, "error": 0}
    for i in range(28):
        kind, read, name, n_rows = _one_case(rng, str(tmp_path), i)
        try:
            with time_limit(20, f"case {i} ({kind})"):
                got = read()
        except DataError as e:
            assert name in str(e), (i, kind, str(e))
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        if n_rows is not None:  # every row is in the table or counted as skipped or repeated
            rep = got.attrs["report"]
            assert len(got) + rep.counts.get("skipped row", 0) + rep.counts.get(
                "dropped duplicate row", 0) == n_rows, (i, kind, rep)
            assert (got.label.notna().sum() + rep.counts.get("dropped row (not in the class map)", 0)
                    == len(got)), (i, kind, rep)
            assert "nan" not in set(got.emotion)
    assert outcomes["error"] > 5 and outcomes["ok"] > 3, outcomes  # both ends were exercised
