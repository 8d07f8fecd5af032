"""Issue 24: paths from sheet cells and folders stay inside --data (one symlink rule for
every reader), duplicate rows and fractional subjects are reported, names written from data
never collide, CSVs are quoted. Tiny sheets of 8-frame clips."""
import csv
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from micronbert.data.annotations import load_annotations
from micronbert.data.long_videos import load_long_annotations
from micronbert.data.io import DataError
from micronbert.data.pairs import find_clips
from micronbert.data.report import DataReport

COLS = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"]


def _clip(folder, n=8, name="img{}.png"):
    os.makedirs(folder, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(np.full((8, 8, 3), i * 7 % 256, np.uint8)).save(os.path.join(folder, name.format(i)))
    return str(folder)


def _casme2(root, rows):
    _clip(root / "sub01" / "EP01")
    pd.DataFrame(rows, columns=COLS).to_excel(root / "CASME2-coding-test.xlsx", index=False)
    return str(root)


def _refused(root, needle, dataset="casme2", loader=load_annotations):
    """A row error naming ``needle`` with raise; one counted skipped row with skip."""
    with pytest.raises(DataError, match=needle):
        loader(dataset, root)
    t = loader(dataset, root, on_error="skip")
    assert t.attrs["report"].counts.get("skipped row") == 1, t.attrs["report"].counts
    return t


@pytest.mark.parametrize("cell", ["../../outside/clip", "ABS"])
def test_casme2_file_name_that_leaves_data_is_a_row_error(tmp_path, cell):
    outside = _clip(tmp_path / "outside" / "clip")
    cell = outside if cell == "ABS" else cell
    root = _casme2(tmp_path / "data", [[1, "EP01", 1, 3, 6, "happiness"], [1, cell, 1, 3, 6, "surprise"]])
    t = _refused(root, r"row 3: file name .* leads outside the data folder")
    assert list(t["clip"]) == ["EP01"] and not any(outside in p for p in t.path)


def test_casme3_long_subject_set_to_an_absolute_path_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    _clip(outside / "a" / "color", 30, "{}.jpg")
    root = tmp_path / "data"
    _clip(root / "spNO.1" / "a" / "color", 30, "{}.jpg")
    pd.DataFrame({"Subject": ["spNO.1", str(outside)], "Filename": ["a", "a"], "Onset": [5, 5],
                  "Apex": [8, 8], "Offset": [12, 12]}).to_excel(
        root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", sheet_name="label", index=False)
    t = _refused(str(root), r"subject '.*elsewhere' / video 'a' leads outside", "casme3_long",
                 load_long_annotations)
    assert [v["path"] for v in t.attrs["videos"]] == [str(root / "spNO.1" / "a" / "color")]


def test_one_symlink_rule_for_sheet_readers_and_pretrain(tmp_path):
    outside = _clip(tmp_path / "outside" / "clip")
    root = tmp_path / "data"
    _casme2(root, [[1, "EP01", 1, 3, 6, "happiness"], [1, "EP02", 1, 3, 6, "surprise"],
                   [1, "EP03", 1, 3, 6, "disgust"]])
    os.symlink(outside, root / "sub01" / "EP02")  # leads outside: refused by every reader
    os.symlink(root / "sub01" / "EP01", root / "sub01" / "EP03")  # stays inside: followed
    t = _refused(str(root), r"row 3: file name 'EP02' leads outside")
    assert list(t["clip"]) == ["EP01", "EP03"]
    report = DataReport()
    clips = find_clips(str(root), report)
    assert [os.path.basename(c) for c in clips] == ["EP01"]  # EP03 is EP01: found once
    assert report.counts == {"skipped clip (outside --data)": 1}
    assert "EP02" in report.names["skipped clip (outside --data)"][0]
    os.symlink(root, root / "sub01" / "loop")  # a link back up: no endless walk
    assert len(find_clips(str(root))) == 1


def test_duplicate_rows_are_counted_once_and_conflicts_are_row_errors(tmp_path):
    root = _casme2(tmp_path, [[1, "EP01", 1, 3, 6, "happiness"], [1, "EP01", 1, 3, 6, "happiness"]])
    t = load_annotations("casme2", root)
    assert len(t) == 1 and t.attrs["report"].counts == {"dropped duplicate row": 1}
    assert "row 3 (EP01): repeats row 2" in t.attrs["report"].names["dropped duplicate row"][0]
    root = _casme2(tmp_path / "b", [[1, "EP01", 1, 3, 6, "happiness"], [1, "EP01", 1, 3, 6, "surprise"]])
    _refused(root, r"row 3: the same clip and frames as row 2 but emotion 'surprise', not 'happiness'")


def test_fractional_subject_is_a_row_error_not_another_subject(tmp_path):
    _clip(tmp_path / "sub02" / "EP01")
    root = _casme2(tmp_path, [[1, "EP01", 1, 3, 6, "happiness"], [1.5, "EP01", 1, 3, 6, "surprise"]])
    t = _refused(root, r"row 3: subject 1.5 is not a subject number")
    assert list(t.subject) == ["sub01"]


# ------------------------------------------------------------------ names written from data
def test_unique_names_are_safe_distinct_and_stable():
    from micronbert.names import unique_names
    ids = ["sp 1", "sp_1", "sub01", "casme2/sub01", "A", "a", "..", "", "../../etc/x", "a,b"]
    names = unique_names(ids)
    assert names["sp_1"] == "sp_1" and names["sub01"] == "sub01"  # safe ids keep their name
    assert names["sp 1"].startswith("sp_1-") and names["casme2/sub01"].startswith("casme2_sub01-")
    assert len({n.lower() for n in names.values()}) == len(ids)  # unique, case ignored
    for n in names.values():
        assert n and not n.startswith(".") and all(c.isalnum() or c in "._-" for c in n), n
    assert unique_names(reversed(ids)) == names  # order does not matter
    assert unique_names(["sp 1"])["sp 1"] == names["sp 1"]  # nor which other ids exist


def test_fold_files_of_colliding_subjects_stay_apart_and_folds_csv_is_quoted(tmp_path, monkeypatch):
    import micronbert.finetune as ft
    from micronbert import create_model
    from micronbert.checkpoint import read_checkpoint
    from micronbert.data.synthetic import write_synthetic_dataset
    root = write_synthetic_dataset(str(tmp_path / "d"), n_subjects=3, clips_per_class=1, progress=False)
    table = load_annotations("synthetic", root)
    subjects = {"sub01": "sp 1", "sub02": "sp_1", "sub03": "a,b"}
    table["subject"] = table["subject"].map(subjects)

    def no_training(model, onset, apex, y, train_table, n, cfg, device, log_path, *a):
        open(log_path, "w").close()
        return ft.Recognizer(model, n)
    monkeypatch.setattr(ft, "train_fold", no_training)
    out = tmp_path / "out"
    ft.finetune(create_model("micronbert_tiny", backend="torch"), table, str(out),
                table.attrs["classes"], device="cpu", epochs=1, batch=4, baselines=False,
                save_models=True, progress=False)
    saved = sorted(read_checkpoint(str(p))["subject"] for p in out.glob("fold_*.pt"))
    assert saved == sorted(subjects.values())  # one model per subject, none overwritten
    with open(out / "folds.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["subject", "n", "accuracy", "uf1", "uar"] and all(len(r) == 5 for r in rows)
    assert sorted(r[0] for r in rows[1:]) == sorted(subjects.values())
    files = json.loads((out / "fold_names.json").read_text())["files"]  # file -> subject
    for name, subject in files.items():
        assert read_checkpoint(str(out / f"fold_{name}.pt"))["subject"] == subject
        assert (out / f"fold_{name}.jsonl").exists()
    assert sorted(files.values()) == sorted(subjects.values())
