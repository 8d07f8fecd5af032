"""Annotation sheets of the micro-expression datasets, read into one table:
subject, clip, path, onset, apex, offset, emotion, label (+ fixes: what was repaired).

Datasets: ``casme2`` (and the synthetic set written in its layout), ``samm``, ``smic``,
``casme3`` (Part A).
Class maps: CASME II 5-class, CAS(ME)^3 7/4/3-class, MEGC2019 composite 3-class.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

from .io import VIDEO_EXTS, DataError
from .paths import inside
from .sheets import as_int, find_sheet, frame_numbers, need_columns, read_rows, read_sheet, text_cell

CASME2_5 = {"happiness": 0, "surprise": 1, "disgust": 2, "repression": 3, "others": 4}
MEGC2019_3 = {"negative": 0, "positive": 1, "surprise": 2}
MEGC2019_MAP = {  # emotion -> composite class (CASME II, SAMM, SMIC labels)
    "happiness": "positive", "positive": "positive",
    "surprise": "surprise",
    "disgust": "negative", "repression": "negative", "anger": "negative", "contempt": "negative",
    "fear": "negative", "sadness": "negative", "negative": "negative",
}
CASME3_7 = {"happy": 0, "disgust": 1, "fear": 2, "anger": 3, "sad": 4, "surprise": 5, "others": 6}
CASME3_4 = {"positive": 0, "negative": 1, "surprise": 2, "others": 3}
CASME3_3 = {"positive": 0, "negative": 1, "surprise": 2}
CASME3_TO_4 = {"happy": "positive", "disgust": "negative", "fear": "negative", "anger": "negative",
               "sad": "negative", "surprise": "surprise", "others": "others"}

CLASS_MAPS = {"casme2_5": CASME2_5, "megc2019_3": MEGC2019_3, "casme3_7": CASME3_7,
              "casme3_4": CASME3_4, "casme3_3": CASME3_3}


def label_of(emotion: str, class_map: str) -> Optional[int]:
    """The class index of an emotion under a class map, or None when the map drops it."""
    e = str(emotion).strip().lower()
    if class_map == "megc2019_3":
        c = MEGC2019_MAP.get(e)
        return None if c is None else MEGC2019_3[c]
    if class_map in ("casme3_4", "casme3_3"):
        c = CASME3_TO_4.get(e)
        return None if c is None else CLASS_MAPS[class_map].get(c)
    if class_map == "casme2_5":
        return CASME2_5.get(e, CASME2_5["others"] if e in ("others", "other") else None)
    if class_map in CLASS_MAPS:
        return CLASS_MAPS[class_map].get(e)
    if class_map == "own":
        raise ValueError("class map 'own' has no fixed labels: it numbers the emotions of a sheet "
                         "(load_annotations(..., class_map='own'))")
    raise ValueError(f"unknown class map {class_map!r}; known: {sorted(CLASS_MAPS)} or 'own'")


def _subject(x, width):
    """A numeric subject cell -> zero-padded text ('sub01' style), else a DataError."""
    rounded = []
    n = as_int(x, "subject", rounded)
    if n is None or n < 0 or rounded:
        raise DataError(f"subject {x!r} is not a subject number (a whole number >= 0)")
    return f"{n:0{width}d}"


def clip_source(path: str) -> str:
    """A clip's frames: the frame folder ``path``, or the video file ``path.mp4`` (any of
    VIDEO_EXTS) beside it (``micronbert synth --video`` writes ``sub01/EP01_01.mp4``)."""
    if os.path.isdir(path):
        return path
    for ext in VIDEO_EXTS:
        if os.path.isfile(path + ext):
            return path + ext
    return path  # list_frames names it: not a folder


def _clip_row(subject, clip, folder, onset, apex, offset, emotion):
    """One table row; repairs (and lists) the known kinds of sheet errors: a missing or
    impossible offset (-> last frame), a missing apex ('/', -1: -> middle), an apex outside
    [onset, offset] (-> middle), a fractional frame number (-> rounded). A frame that is not
    on disk is an error. ``folder``: a frame folder or a video file."""
    numbers = frame_numbers(folder)
    fixes = []
    onset_v = as_int(onset, "onset", fixes)
    if onset_v is None or onset_v not in numbers:
        raise DataError(f"{folder}: onset frame {onset!r} missing")
    onset = onset_v
    off = as_int(offset, "offset", fixes)
    if off is None or off <= 0 or off < onset:
        fixes.append(("repaired offset", f"offset {offset!r} -> last frame {numbers[-1]}"))
        off = numbers[-1]
    ap = as_int(apex, "apex", fixes)
    if ap is None or ap < 0:
        fixes.append(("repaired apex", f"apex {apex!r} -> middle {(onset + off) // 2}"))
        ap = (onset + off) // 2
    elif not onset <= ap <= off:
        fixes.append(("repaired apex", f"apex {ap} outside [{onset}, {off}] -> middle"))
        ap = (onset + off) // 2
    for name, n in (("apex", ap), ("offset", off)):
        if n not in numbers:  # a repaired value may fall between numbered frames
            if name == "apex" and fixes:
                n = min(numbers, key=lambda m: abs(m - n))
                ap = n
            else:
                raise DataError(f"{folder}: {name} frame {n} missing")
    return dict(subject=subject, clip=clip, path=folder, onset=onset, apex=ap, offset=off,
                onset_index=numbers.index(onset), apex_index=numbers.index(ap), n_frames=len(numbers),
                emotion=emotion, fixes="; ".join(t for _, t in fixes), _fixes=fixes)


def _table(records, sheet, class_map, on_error):
    """Build the table from (row number, thunk) records. Every skipped row (``on_error=
    "skip"``), repair and row the class map leaves out is counted and named in
    ``table.attrs["report"]`` (a DataReport); "raise" stops at the first bad row.
    ``class_map="own"`` numbers the emotions of the rows in sorted order."""
    import pandas as pd
    rows, skipped, report = read_rows(records, sheet, on_error, "clip")
    if not rows:
        raise DataError(f"{sheet}: no readable rows" + (
            f": all {len(skipped)} skipped (first: {skipped[0]})" if skipped else " (an empty sheet?)"))
    seen = sorted({r["emotion"].lower() for r in rows})
    classes = seen if class_map == "own" else sorted(CLASS_MAPS[class_map], key=CLASS_MAPS[class_map].get)
    for r in rows:
        r["emotion"] = r["emotion"].lower()
        r["label"] = seen.index(r["emotion"]) if class_map == "own" else label_of(r["emotion"], class_map)
        if r["label"] is None:
            report.add("dropped row (not in the class map)", f"row {r['row']} ({r['clip']}): {r['emotion']!r}")
    if all(r["label"] is None for r in rows):
        raise DataError(f"{sheet}: the class map {class_map!r} keeps none of the {len(rows)} rows; "
                        f"emotions seen: {seen}. Choose a --class-map that covers them "
                        f"({sorted(CLASS_MAPS)}) or 'own' (the sheet's emotions as classes)")
    table = pd.DataFrame(rows)
    table["label"] = table["label"].astype("Int64") if table["label"].isna().any() else table["label"]
    table.attrs["skipped"] = skipped
    table.attrs["report"] = report
    table.attrs["classes"] = classes
    return table


def _check_map(class_map):
    if class_map != "own" and class_map not in CLASS_MAPS:
        raise ValueError(f"unknown class map {class_map!r}; known: {sorted(CLASS_MAPS)} or 'own' "
                         "(the sheet's emotions as classes, in sorted order)")


def _rows(df, sheet, first_row):
    if df.empty:
        raise DataError(f"{sheet}: a header but no rows (an empty sheet?)")
    return [(i + first_row, r) for i, (_, r) in enumerate(df.iterrows())]


def load_casme2(root: str, class_map: str = "casme2_5", on_error: str = "raise"):
    """CASME II: ``CASME2-coding-*.xlsx`` and ``sub01/EP02_01f/img46.jpg`` (or reg_img46.jpg);
    a clip may also be a video ``sub01/EP02_01f.mp4`` (frames numbered 1..T).

    ``class_map="own"`` numbers the sheet's emotions in sorted order (synthetic set).
    ``on_error``: "raise" (an error naming the row) or "skip" (the row is dropped, listed in
    ``table.attrs["skipped"]`` and counted in ``table.attrs["report"]``).
    """
    _check_map(class_map)
    sheet = find_sheet(root, "CASME2-coding-*.xlsx")
    df = read_sheet(sheet)
    need_columns(df, ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"], sheet)

    def make(r):
        subj, clip = "sub" + _subject(r["Subject"], 2), text_cell(r["Filename"], "file name")
        emo = text_cell(r["Estimated Emotion"], "emotion")
        src = inside(root, clip_source(os.path.join(root, subj, clip)), f"file name {clip!r}")
        return _clip_row(subj, clip, src, r["OnsetFrame"], r["ApexFrame"], r["OffsetFrame"], emo)
    return _table([(n, lambda r=r: make(r)) for n, r in _rows(df, sheet, 2)], sheet, class_map, on_error)


def load_samm(root: str, class_map: str = "megc2019_3", on_error: str = "raise"):
    """SAMM: ``SAMM_Micro_FACS_Codes_v2.xlsx`` (header on row 14), frames
    ``006/006_1_2/006_05562.jpg`` (grey)."""
    _check_map(class_map)
    sheet = find_sheet(root, "SAMM_Micro_FACS_Codes*.xlsx")
    df = read_sheet(sheet, header=13)
    need_columns(df, ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion"], sheet)

    def make(r):
        subj, clip = _subject(r["Subject"], 3), text_cell(r["Filename"], "file name")
        emo = text_cell(r["Estimated Emotion"], "emotion")
        src = inside(root, clip_source(os.path.join(root, subj, clip)), f"file name {clip!r}")
        return _clip_row(subj, clip, src, r["Onset Frame"], r["Apex Frame"], r["Offset Frame"], emo)
    return _table([(n, lambda r=r: make(r)) for n, r in _rows(df, sheet, 15)], sheet, class_map, on_error)


def load_smic(root: str, class_map: str = "megc2019_3", on_error: str = "raise"):
    """SMIC (HS, VIS or NIR folder as ``root``): ``s1/micro/negative/s1_ne_01/image012345.bmp``;
    the class comes from the folder, onset/offset are the first/last frames, apex the middle."""
    _check_map(class_map)
    folders = sorted(glob.glob(os.path.join(root, "s*", "micro", "*", "*")))
    if not folders:
        raise DataError(f"{root}: no s*/micro/<class>/<clip> folders (SMIC layout)")

    def make(folder):
        parts = folder.split(os.sep)
        subj, emo, clip = parts[-4], parts[-2].lower(), parts[-1]
        inside(root, folder, f"clip folder {clip}")
        numbers = frame_numbers(folder)
        return _clip_row(subj, clip, folder, numbers[0], (numbers[0] + numbers[-1]) // 2,
                         numbers[-1], emo)
    return _table([(f, lambda f=f: make(f)) for f in folders], root, class_map, on_error)


def load_casme3(root: str, class_map: str = "casme3_7", on_error: str = "raise"):
    """CAS(ME)^3 Part A: a sheet (sheet ``label`` when present) with Subject, Filename,
    Onset, Apex, Offset, AU, Objective class, emotion; frames ``spNO.1/a/color/12.jpg``."""
    _check_map(class_map)
    sheet = find_sheet(root, "*.xlsx")
    import pandas as pd
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    df = read_sheet(sheet, sheet_name="label" if "label" in names else 0)
    need_columns(df, ["Subject", "Filename", "Onset", "Apex", "Offset", "emotion"], sheet)

    def make(r):
        subj, clip = text_cell(r["Subject"], "subject"), text_cell(r["Filename"], "file name")
        emo = text_cell(r["emotion"], "emotion")
        folder = os.path.join(root, subj, clip, "color")
        if not os.path.isdir(folder):
            folder = clip_source(os.path.join(root, subj, clip))
        inside(root, folder, f"subject {subj!r} / file name {clip!r}")
        return _clip_row(subj, clip, folder, r["Onset"], r["Apex"], r["Offset"], emo)
    return _table([(n, lambda r=r: make(r)) for n, r in _rows(df, sheet, 2)], sheet, class_map, on_error)


LOADERS = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic, "casme3": load_casme3}


# the file that marks each layout (detect_dataset), most specific first
LAYOUT_MARKERS = (
    ("synthetic", "CASME2-coding-synthetic.xlsx", "`micronbert synth`'s sheet"),
    ("casme2", "CASME2-coding-*.xlsx", "CASME II's sheet"),
    ("samm", "SAMM_Micro_FACS_Codes*.xlsx", "SAMM's sheet"),
    ("smic", os.path.join("s*", "micro", "*", "*"), "SMIC's s*/micro/<class>/<clip> folders"),
    ("casme3", "*.xlsx", "a sheet with CAS(ME)^3's columns (Subject, Filename, Onset, Apex, "
                         "Offset, emotion)"),
)


def detect_dataset(root: str) -> str:
    """The annotation layout of a dataset folder, from the files that mark each one
    (``LAYOUT_MARKERS``); a DataError naming what was looked for when none is there."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder")
    for name, pattern, _ in LAYOUT_MARKERS:
        if glob.glob(os.path.join(root, pattern)):
            return name
    looked = "; ".join(f"{n}: {what} ({p})" for n, p, what in LAYOUT_MARKERS)
    raise DataError(f"{root}: not a known dataset layout (looked for {looked}); pass --dataset "
                    f"and check the folder is the dataset's root")


def load_annotations(dataset: str, root: str, class_map: Optional[str] = None, on_error="raise"):
    """One table for a dataset: subject, clip, path, onset, apex, offset, emotion, label
    (+ onset/apex indices, frame count, and the repairs made in ``fixes``).
    ``dataset=None`` detects the layout (``detect_dataset``)."""
    if dataset is None:
        dataset = detect_dataset(root)
    if dataset == "synthetic":
        return load_casme2(root, class_map or "own", on_error)
    if dataset == "megc2019":
        return load_megc2019(root, on_error)
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(LOADERS) + ['megc2019', 'synthetic']}")
    return LOADERS[dataset](root, **({"class_map": class_map} if class_map else {}), on_error=on_error)


def load_megc2019(spec: str, on_error: str = "raise"):
    """The MEGC2019 composite: CASME II, SAMM and SMIC (HS) in one table with the 3-class
    map, subjects prefixed by their dataset (``casme2/sub01``, ``samm/006``, ``smic/s1``),
    a ``dataset`` column. ``spec``: ``casme2=DIR,samm=DIR,smic=DIR`` (any of the three)."""
    import pandas as pd
    roots = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, sep, path = item.partition("=")
        if not sep or name not in ("casme2", "samm", "smic") or name in roots:
            raise DataError(f"megc2019 --data {spec!r}: give casme2=DIR,samm=DIR,smic=DIR "
                            f"(each at most once), got {item!r}")
        roots[name] = path
    if not roots:
        raise DataError("megc2019 --data: give casme2=DIR,samm=DIR,smic=DIR")
    parts, skipped = [], []
    for name, root in roots.items():
        t = LOADERS[name](root, class_map="megc2019_3", on_error=on_error)
        skipped += [f"{name}: {s}" for s in t.attrs.get("skipped", [])]
        t = t.assign(subject=name + "/" + t["subject"].astype(str), dataset=name)
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    table.attrs["skipped"] = skipped
    table.attrs["classes"] = sorted(MEGC2019_3, key=MEGC2019_3.get)
    return table


def readable_rows(table, on_error: str = "raise", report=None):
    """The rows of an annotation table whose onset and apex frames decode.

    ``on_error="raise"``: the table as it is (a clip that does not decode raises a DataError
    naming it when its frames are read). ``"skip"``: each clip's two frames are decoded
    once here; a clip that fails is dropped and counted as "skipped clip" in ``report``.
    Every clip failing is a DataError.
    """
    from .io import read_frames
    if on_error != "skip" or len(table) == 0:
        return table
    keep = []
    for r in table.itertuples():
        try:
            read_frames(r.path, [int(r.onset_index), int(r.apex_index)])
            keep.append(True)
        except DataError as e:
            keep.append(False)
            if report is not None:
                report.add("skipped clip", str(e))
    if not any(keep):
        raise DataError(f"none of the {len(table)} clips decodes (first: {table.path.iloc[0]})")
    return table[keep].reset_index(drop=True)
