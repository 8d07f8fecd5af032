"""Spotting: synthetic long videos and their sheet, MEGC scoring on hand-counted cases, the
curve -> intervals step, the long-video adapters, and the spotter end to end (small)."""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch

from micronbert.cli import main
from micronbert.data.long_videos import load_long_annotations
from micronbert.data.io import DataError, read_frames
from micronbert.spot import (SpotParams, intervals_from_curve, iou, match, megc_counts, prf,
                             spot_one)


# ------------------------------------------------------------------ synthetic long videos
def test_synth_long_sheet_matches_rendered_motion(tmp_path):
    out = tmp_path / "long"
    assert main(["synth", "--long", "--out", str(out), "--subjects", "1", "--videos-per-subject", "1",
                 "--seconds", "6", "--fps", "20", "--size", "64", "--nuisance", "none"]) == 0
    raw = pd.read_excel(out / "SAMM_LongVideos_synthetic.xlsx", sheet_name="FACS_Movement_Only",
                        header=None)
    assert list(raw.iloc[9]) == ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                                 "Duration", "Type", "Action Units", "Notes"]
    assert set(raw.iloc[10:, 7]) <= {"Micro - 1/2", "Macro"}
    table = load_long_annotations("synthetic_long", str(out))
    assert len(table) >= 2 and table.attrs["videos"][0]["n_frames"] == 120
    frames = read_frames(table.attrs["videos"][0]["path"]).astype(np.int16)
    moved = np.abs(frames - frames[0]).reshape(len(frames), -1).max(1) > 0
    inside = np.zeros(len(frames), bool)
    for r in table.itertuples():
        inside[r.onset + 1:r.offset] = True  # zero displacement at onset and offset
        assert r.onset < r.apex < r.offset
        dur = (r.offset - r.onset + 1) / 20
        assert (r.kind == "micro") == (dur <= 0.55)
    assert (moved == inside).all(), np.flatnonzero(moved != inside)


# ------------------------------------------------------------------ MEGC scoring
def test_iou_edge_cases():
    assert iou((0, 9), (0, 9)) == 1.0
    assert iou((0, 9), (10, 19)) == 0.0           # adjacent, no shared frame
    assert iou((0, 9), (9, 18)) == 1 / 19          # one shared frame (inclusive frames)
    assert iou((0, 9), (5, 14)) == 5 / 15
    assert iou((0, 9), (0, 4)) == 0.5              # exactly the threshold: a true positive
    assert match([(0, 4)], [(0, 9)]) == 1
    assert match([(0, 3)], [(0, 9)]) == 0          # 0.4


def test_megc_counts_hand_counted():
    gt = {"a": [dict(onset=10, offset=19, kind="micro"), dict(onset=100, offset=199, kind="macro")],
          "b": [dict(onset=50, offset=59, kind="micro")]}
    pred = {"a": [dict(onset=10, offset=19, kind="micro"),    # TP
                  dict(onset=12, offset=21, kind="micro"),    # IoU 8/12 with the same GT: FP (matched once)
                  dict(onset=100, offset=149, kind="macro"),  # IoU 0.5: TP
                  dict(onset=300, offset=310, kind="micro")],  # FP
            "b": [dict(onset=50, offset=59, kind="macro")],    # right place, wrong class: FP (macro)
            "c": [dict(onset=0, offset=5, kind="micro")]}      # a video without expressions: FP
    r = megc_counts(pred, gt)
    assert (r["micro"]["tp"], r["micro"]["fp"], r["micro"]["fn"]) == (1, 3, 1)
    assert (r["macro"]["tp"], r["macro"]["fp"], r["macro"]["fn"]) == (1, 1, 0)
    assert (r["overall"]["tp"], r["overall"]["fp"], r["overall"]["fn"]) == (2, 4, 1)
    assert r["micro"]["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert r["overall"]["f1"] == pytest.approx(2 * (2 / 6) * (2 / 3) / (2 / 6 + 2 / 3))
    assert prf(0, 0, 0)["f1"] == 0.0


def test_match_prefers_the_best_pairing():
    # greedy by IoU: the exact proposal takes the GT, the other proposal the second GT
    assert match([(0, 9), (8, 17)], [(0, 9), (9, 18)]) == 2


# ------------------------------------------------------------------ curve -> intervals
def test_intervals_from_curve_kinds_merge_and_minimum():
    params = SpotParams(fps=20, min_s=0.2, merge_s=0.5)
    c = np.zeros(400)
    c[40:48] = 1.0      # 8 frames = 0.4 s: micro
    c[100:130] = 1.0    # 1.5 s: macro
    c[136:140] = 1.0    # 5 frames after: merged into it
    c[300:302] = 1.0    # 0.1 s: dropped
    got = intervals_from_curve(c, params, p=0.5)
    assert [(x["onset"], x["offset"], x["kind"]) for x in got] == [(40, 47, "micro"), (100, 139, "macro")]
    assert 40 <= got[0]["apex"] <= 47


# ------------------------------------------------------------------ adapters
def _samm_sheet(path, rows):
    pre = [[""] * 10 for _ in range(9)]
    head = [["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
             "Action Units", "Notes"]]
    pd.DataFrame(pre + head + rows).to_excel(path, sheet_name="FACS_Movement_Only", index=False,
                                             header=False)


def _frames(folder, names):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for n in names:
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(os.path.join(folder, n))


def test_samm_long_adapter_repairs_and_errors(tmp_path):
    _frames(tmp_path / "SAMM_longvideos" / "006_1", [f"006_1_{i:04d}.jpg" for i in range(1, 301)])
    _frames(tmp_path / "SAMM_longvideos" / "007_2", [f"007_2_{i:04d}.jpg" for i in range(1, 51)])
    rows = [[6, "006_1_1", 1, 10, 30, 60, 51, "Micro - 1/2", "AU12", ""],
            [6, "006_1_2", 1, 0, 150, 200, 0, "Macro", "AU4", ""],        # onset 0 -> apex
            [6, "006_1_3", 1, 250, 260, 5476, 0, "Macro", "AU1", ""]]     # offset past the end
    _samm_sheet(tmp_path / "SAMM_LongVideos_V2_Release.xlsx", rows)
    t = load_long_annotations("samm_long", str(tmp_path))
    assert list(zip(t.onset, t.apex, t.offset, t.kind)) == [(9, 29, 59, "micro"), (149, 149, 199, "macro"),
                                                             (249, 259, 299, "macro")]
    assert "onset 0 -> apex 150" in t.fixes[1] and "past the last frame" in t.fixes[2]
    assert [v["video"] for v in t.attrs["videos"]] == ["006_1", "007_2"]  # 007_2: no expressions
    assert t.attrs["videos"][0]["fps"] == 200.0
    _samm_sheet(tmp_path / "SAMM_LongVideos_V2_Release.xlsx", rows + [[9, "009_1_1", 1, 5, 6, 7, 3, "Micro - 1/2", "", ""]])
    with pytest.raises(DataError, match=r"row 14: video 009_1 not found"):
        load_long_annotations("samm_long", str(tmp_path))
    t = load_long_annotations("samm_long", str(tmp_path), on_error="skip")
    assert len(t) == 3 and "009_1" in t.attrs["skipped"][0]


def test_casme2_long_adapter(tmp_path):
    _frames(tmp_path / "rawpic" / "s15" / "15_0101disgustingteeth", [f"img{i}.jpg" for i in range(1, 101)])
    _frames(tmp_path / "rawpic" / "s15" / "15_0401girlcrashing", [f"img{i}.jpg" for i in range(1, 81)])
    main_rows = [[1, "disgust1_1", 20, 25, 30, "4", "negative", "micro-expression", "disgust"],
                 [1, "anger1_1", 10, 40, 0, "4+7", "negative", "macro-expression", "anger"]]  # offset 0
    with pd.ExcelWriter(tmp_path / "CAS(ME)^2code_final.xlsx") as w:
        pd.DataFrame(main_rows).to_excel(w, sheet_name="CASFEcode_final", index=False, header=False)
        pd.DataFrame([["s15", "jgd", 1]]).to_excel(w, sheet_name="naming rule1", index=False, header=False)
        pd.DataFrame([[401, "anger1"]]).to_excel(w, sheet_name="naming rule2", index=False, header=False)
    t = load_long_annotations("casme2_long", str(tmp_path))
    assert list(zip(t.video, t.onset, t.offset, t.kind)) == [("15_0101disgustingteeth", 19, 29, "micro"),
                                                             ("15_0401girlcrashing", 9, 39, "macro")]
    assert "disgust1 -> 0101" in t.fixes[0] and "offset 0 -> apex 40" in t.fixes[1]
    assert t.attrs["videos"][0]["fps"] == 30.0


def test_casme3_long_adapter(tmp_path):
    _frames(tmp_path / "spNO.1" / "a" / "color", [f"{i}.jpg" for i in range(1, 61)])
    with pd.ExcelWriter(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx") as w:
        pd.DataFrame({"Subject": ["spNO.1", "spNO.2"], "Filename": ["a", "b"], "Onset": [5, 1],
                      "Apex": [8, 2], "Offset": [12, 3], "AU": ["4", "1"], "Objective class": [1, 1],
                      "emotion": ["others", "others"]}).to_excel(w, sheet_name="label", index=False)
    pd.DataFrame({"sub": ["spNO.1"], "seq": ["a"], "onset": [20], "apex": [30], "offset": [50],
                  "emotion": ["happy"]}).to_excel(tmp_path / "cas(me)3_part_A_MaE_label_JpgIndex_v2_emotion.xlsx",
                                                  index=False)
    with pytest.raises(DataError, match=r"row 3 of cas\(me\)3_part_A_ME_label_JpgIndex_v2.xlsx: no frame folder"):
        load_long_annotations("casme3_long", str(tmp_path))
    t = load_long_annotations("casme3_long", str(tmp_path), on_error="skip")
    assert list(zip(t.video, t.onset, t.apex, t.offset, t.kind)) == [("spNO.1_a", 4, 7, 11, "micro"),
                                                                      ("spNO.1_a", 19, 29, 49, "macro")]
    assert len(t.attrs["skipped"]) == 1


# ------------------------------------------------------------------ the spotter
def test_flow_baseline_finds_an_inserted_interval(tmp_path):
    from micronbert.data.io import write_video
    from micronbert.data.synthetic import face_images
    from micronbert.data.synthetic_long import Event, render_long_video
    fps = 20
    ev = [Event(40, 45, 50, "micro", [((0.74, 0.36), (-1.8, -2.4))]),
          Event(100, 120, 140, "macro", [((0.36, 0.33), (-4.0, 0.0)), ((0.36, 0.67), (-4.0, 0.0))])]
    frames = render_long_video(face_images(48)[0], 180, fps, 64, ev, "none", torch.Generator().manual_seed(0))
    write_video(frames, str(tmp_path / "v.mp4"), fps=fps)
    gt = [dict(onset=e.onset, apex=e.apex, offset=e.offset, kind=e.kind) for e in ev]
    res = spot_one(str(tmp_path / "v.mp4"), str(tmp_path / "out"), None, fps=fps, method="flow",
                   gt=gt, flow_size=64, progress=False)
    assert res["megc"]["mdmd_flow"]["overall"]["tp"] >= 1, res["intervals"]
    for f in ("intervals.csv", "intervals.json", "scores.csv", "score.png", "spot.json"):
        assert os.path.isfile(tmp_path / "out" / f)


def test_spot_cli_end_to_end(tmp_path):
    data, out = tmp_path / "long", tmp_path / "spot"
    assert main(["synth", "--long", "--out", str(data), "--subjects", "2", "--videos-per-subject", "1",
                 "--seconds", "4", "--fps", "12", "--size", "64", "--nuisance", "low"]) == 0
    res = main(["spot", "--data", str(data), "--dataset", "synthetic_long", "--out", str(out),
                "--model", "micronbert_tiny", "--backend", "torch", "--batch", "16"])
    assert res == 0
    summary = json.load(open(out / "spot_results.json"))
    assert set(summary["loso_p"]) == {"micronbert", "mdmd_flow"} and summary["videos"] == 2
    # the verdict opens spot_results.json and .md, computed from the LOSO-p F1s
    from micronbert.spot.run import spot_verdict
    assert list(summary)[0] == "verdict" and summary["verdict"] == spot_verdict(summary["loso_p"])
    assert summary["verdict"].startswith("the model (micronbert) is ")
    md = (out / "spot_results.md").read_text().splitlines()
    assert md[2] == "**Does it work?** T" + summary["verdict"][1:] and md[4].startswith("Chance: overall F1 0.000")
    # the intervals written per video, scored against the sheet, give the summary's counts
    # (the files and the table report the same spotting); the sheet itself scores F1 1.0
    table = load_long_annotations("synthetic_long", str(data))
    gt = {}
    for r in table.itertuples():
        gt.setdefault(r.video, []).append(dict(onset=r.onset, offset=r.offset, kind=r.kind))
    for name, stem in (("micronbert", "intervals"), ("mdmd_flow", "intervals_mdmd_flow")):
        written = {v["video"]: json.load(open(out / "videos" / v["video"] / f"{stem}.json"))["intervals"]
                   for v in table.attrs["videos"]}
        assert megc_counts(written, gt) == summary["default_p"][name]
    assert megc_counts(gt, gt)["overall"]["f1"] == 1.0
    assert os.path.isfile(out / "spot_f1.png")
    for v in ("001_1", "002_1"):
        for f in ("intervals.csv", "intervals.json", "intervals_mdmd_flow.csv", "score.png"):
            assert os.path.isfile(out / "videos" / v / f)
    assert json.load(open(out / "videos" / "names.json"))["files"] == {"001_1": "001_1", "002_1": "002_1"}
    one = tmp_path / "one"
    assert main(["spot", "--video", str(data / "SAMM_longvideos" / "001_1"), "--fps", "12", "--out",
                 str(one), "--model", "micronbert_tiny", "--backend", "torch", "--method", "model",
                 "--mp4"]) == 0
    got = json.load(open(one / "intervals.json"))
    assert got["fps"] == 12 and isinstance(got["intervals"], list)
    assert os.path.getsize(one / "spot_map.mp4") > 0 and os.path.isfile(one / "score.png")


def test_spot_truncated_video_is_one_clear_error(tmp_path, capsys):
    from micronbert.data.io import write_video
    frames = np.random.default_rng(0).integers(0, 255, (30, 32, 32, 3), dtype=np.uint8)
    p = tmp_path / "v.mp4"
    write_video(frames, str(p), fps=10)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="v.mp4"):
        spot_one(str(p), str(tmp_path / "o"), None, fps=10, method="flow", progress=False)
    with pytest.raises(SystemExit) as e:
        main(["spot", "--video", str(p), "--out", str(tmp_path / "o"), "--method", "flow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and re.match(r"micronbert: error: .*v.mp4", err[-1]), err
    with pytest.raises(SystemExit):
        main(["spot", "--out", str(tmp_path / "o")])  # neither --video nor --data


def test_flow_score_ignores_head_translation_not_local_motion():
    from micronbert.data.synthetic import face_images, warp_region
    from micronbert.spot import FlowScorer
    big = face_images(120)[0].float()
    face, shifted = big[:, 4:116, 4:116], big[:, 2:114, 2:114]        # the whole head moves 2 px
    local, _ = warp_region(face, (80, 40), (-2.0, -2.0), 7.0)          # a mouth corner moves 2 px
    u8 = lambda x: x.clamp(0, 255).round().to(torch.uint8)[None]  # noqa: E731
    sc = FlowScorer(112)
    still = sc(u8(face), u8(face))[0][0]
    head = sc(u8(face), u8(shifted))[0][0]
    mouth = sc(u8(face), u8(local))[0][0]
    assert mouth > 3 * max(head, still, 1e-3), (still, head, mouth)


def test_spot_dali_frames_match_pyav_and_spot_runs(tmp_path):
    """DALI's frame source (its CPU decoders here, VP9) against PyAV's, and `spot --dali`
    end to end; in a subprocess, as the other DALI checks (test_data._in_subprocess)."""
    from test_data import _in_subprocess
    _in_subprocess("spot_frames_match", tmp_path)


def test_spot_dali_without_dali_names_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    from micronbert.data.io import write_video
    write_video(np.zeros((6, 16, 16, 3), np.uint8), str(tmp_path / "v.webm"), fps=10, codec="libvpx-vp9")
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if not installed
    with pytest.raises(SystemExit):
        main(["spot", "--video", str(tmp_path / "v.webm"), "--out", str(tmp_path / "o"),
              "--method", "flow", "--dali"])
    assert re.search(r"micronbert: error: .*needs NVIDIA DALI.*\.\[dali\]",
                     capsys.readouterr().err)
