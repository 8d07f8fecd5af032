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

from .io import VIDEO_EXTS, DataError, count_frames, frame_number, list_frames
from .paths import inside
from .report import DataReport

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


def _read_sheet(path, **kw):
    import pandas as pd
    try:
        return pd.read_excel(path, **kw)
    except Exception as e:
        raise DataError(f"{path}: unreadable sheet ({type(e).__name__}: {e})") from e


def _find_sheet(root, pattern):
    sheets = sorted(glob.glob(os.path.join(root, pattern)))
    if not sheets:
        raise DataError(f"{root}: no {pattern} sheet")
    return sheets[0]


def _need(df, cols, path):
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {list(df.columns)})")


def _as_int(x, what="frame", fixes=None):
    """A frame number from a sheet cell: an int, or None when the cell is not a number.
    A fractional number (41.6) is rounded and the repair listed in ``fixes``."""
    try:
        f = float(str(x).strip()) if isinstance(x, str) else float(x)
    except (TypeError, ValueError):
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    if f != int(f):
        if fixes is not None:
            fixes.append(("repaired float frame number", f"{what} {x!r} -> {int(round(f))}"))
        return int(round(f))
    return int(f)


def _text(x, what):
    """A non-empty text cell (emotion, clip name), else a DataError (a NaN cell is not 'nan')."""
    if x is None or (isinstance(x, float) and x != x) or not str(x).strip() \
            or str(x).strip().lower() in ("nan", "none"):
        raise DataError(f"no {what} (empty cell)")
    return str(x).strip()


def _subject(x, width):
    """A numeric subject cell -> zero-padded text ('sub01' style), else a DataError."""
    rounded = []
    n = _as_int(x, "subject", rounded)
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


def _frame_numbers(path):
    """Frame numbers of a clip: from the file names of a folder; 1..T for a video (frame k
    of a video is its k-th decoded frame, as the sheet of ``synth --video`` numbers them)."""
    if os.path.isfile(path) and path.lower().endswith(VIDEO_EXTS):
        return list(range(1, count_frames(path) + 1))
    return [frame_number(f) for f in list_frames(path)]


def _clip_row(subject, clip, folder, onset, apex, offset, emotion):
    """One table row; repairs (and lists) the known kinds of sheet errors: a missing or
    impossible offset (-> last frame), a missing apex ('/', -1: -> middle), an apex outside
    [onset, offset] (-> middle), a fractional frame number (-> rounded). A frame that is not
    on disk is an error. ``folder``: a frame folder or a video file."""
    numbers = _frame_numbers(folder)
    fixes = []
    onset_v = _as_int(onset, "onset", fixes)
    if onset_v is None or onset_v not in numbers:
        raise DataError(f"{folder}: onset frame {onset!r} missing")
    onset = onset_v
    off = _as_int(offset, "offset", fixes)
    if off is None or off <= 0 or off < onset:
        fixes.append(("repaired offset", f"offset {offset!r} -> last frame {numbers[-1]}"))
        off = numbers[-1]
    ap = _as_int(apex, "apex", fixes)
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


def _duplicate_of(row, seen, name_key, rownum):
    """The earlier row number ``row`` repeats (same subject, clip or video, frames and kind),
    else None (``row`` is registered in ``seen``); a repeat with another emotion is a
    DataError (which of the two is right cannot be told)."""
    key = tuple(row.get(k) for k in ("subject", name_key, "path", "onset", "apex", "offset", "kind"))
    emotion = str(row.get("emotion", "")).lower()
    if key not in seen:
        seen[key] = (rownum, emotion)
        return None
    first, earlier = seen[key]
    if emotion != earlier:
        raise DataError(f"the same {name_key} and frames as row {first} but emotion "
                        f"{emotion!r}, not {earlier!r}")
    return first


def _read_rows(records, sheet, on_error, name_key):
    """Rows from (row number, thunk) records: "raise" stops at the first bad row naming it;
    "skip" drops it and lists it; skips and each row's ``_fixes`` (kind, text) are counted
    in a DataReport. Returns (rows, skipped, report); each row gets its sheet ``row``."""
    report = DataReport()
    rows, skipped, seen = [], [], {}
    for rownum, make in records:
        try:
            row = make()
            first = _duplicate_of(row, seen, name_key, rownum)
        except DataError as e:
            if on_error == "raise":
                raise DataError(f"{sheet} row {rownum}: {e} (--on-error skip drops such rows)") from e
            skipped.append(f"row {rownum}: {e}")
            report.add("skipped row", f"row {rownum}: {e}")
            continue
        if first is not None:  # the same row again: counted once
            report.add("dropped duplicate row", f"row {rownum} ({row[name_key]}): repeats row {first}")
            continue
        for kind, text in row.pop("_fixes"):
            report.add(kind, f"row {rownum} ({row[name_key]}): {text}")
        row["row"] = rownum
        rows.append(row)
    return rows, skipped, report


def _table(records, sheet, class_map, on_error):
    """Build the table from (row number, thunk) records. Every skipped row (``on_error=
    "skip"``), repair and row the class map leaves out is counted and named in
    ``table.attrs["report"]`` (a DataReport); "raise" stops at the first bad row.
    ``class_map="own"`` numbers the emotions of the rows in sorted order."""
    import pandas as pd
    rows, skipped, report = _read_rows(records, sheet, on_error, "clip")
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
    sheet = _find_sheet(root, "CASME2-coding-*.xlsx")
    df = _read_sheet(sheet)
    _need(df, ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"], sheet)

    def make(r):
        subj, clip = "sub" + _subject(r["Subject"], 2), _text(r["Filename"], "file name")
        emo = _text(r["Estimated Emotion"], "emotion")
        src = inside(root, clip_source(os.path.join(root, subj, clip)), f"file name {clip!r}")
        return _clip_row(subj, clip, src, r["OnsetFrame"], r["ApexFrame"], r["OffsetFrame"], emo)
    return _table([(n, lambda r=r: make(r)) for n, r in _rows(df, sheet, 2)], sheet, class_map, on_error)


def load_samm(root: str, class_map: str = "megc2019_3", on_error: str = "raise"):
    """SAMM: ``SAMM_Micro_FACS_Codes_v2.xlsx`` (header on row 14), frames
    ``006/006_1_2/006_05562.jpg`` (grey)."""
    _check_map(class_map)
    sheet = _find_sheet(root, "SAMM_Micro_FACS_Codes*.xlsx")
    df = _read_sheet(sheet, header=13)
    _need(df, ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion"], sheet)

    def make(r):
        subj, clip = _subject(r["Subject"], 3), _text(r["Filename"], "file name")
        emo = _text(r["Estimated Emotion"], "emotion")
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
        numbers = _frame_numbers(folder)
        return _clip_row(subj, clip, folder, numbers[0], (numbers[0] + numbers[-1]) // 2,
                         numbers[-1], emo)
    return _table([(f, lambda f=f: make(f)) for f in folders], root, class_map, on_error)


def load_casme3(root: str, class_map: str = "casme3_7", on_error: str = "raise"):
    """CAS(ME)^3 Part A: a sheet (sheet ``label`` when present) with Subject, Filename,
    Onset, Apex, Offset, AU, Objective class, emotion; frames ``spNO.1/a/color/12.jpg``."""
    _check_map(class_map)
    sheet = _find_sheet(root, "*.xlsx")
    import pandas as pd
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    df = _read_sheet(sheet, sheet_name="label" if "label" in names else 0)
    _need(df, ["Subject", "Filename", "Onset", "Apex", "Offset", "emotion"], sheet)

    def make(r):
        subj, clip = _text(r["Subject"], "subject"), _text(r["Filename"], "file name")
        emo = _text(r["emotion"], "emotion")
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


# ------------------------------------------------------------------ long videos (spotting)
# One table of ground-truth intervals (subject, video, path, onset, apex, offset as 0-based
# frame indices, kind "micro"/"macro", fixes) and the list of videos of the set; frame
# numbers of the sheets are mapped to indices through the frame files' own numbers.
LONG_DATASETS = ("samm_long", "casme2_long", "casme3_long", "synthetic_long")
SAMM_LONG_FPS = 200.0
CASME2_LONG_FPS = 30.0


def _long_video_entry(subject, video, path, fps):
    return dict(subject=subject, video=video, path=path, fps=float(fps), n_frames=count_frames(path))


def _long_interval(entry, onset, apex, offset, kind):
    """One ground-truth interval, with the known sheet errors repaired and listed: onset 0
    or missing (-> apex: SAMM-LV's convention), offset 0 or missing (-> apex: CAS(ME)^2's),
    offset past the last frame (-> last frame), apex outside [onset, offset] (-> middle)."""
    numbers = _frame_numbers(entry["path"])
    fixes = []
    on, ap, off = _as_int(onset, "onset", fixes), _as_int(apex, "apex", fixes), _as_int(offset, "offset", fixes)
    if (on is None or on <= 0) and ap is not None and ap > 0:
        fixes.append(("repaired onset", f"onset {onset!r} -> apex {ap}"))
        on = ap
    if (off is None or off <= 0) and ap is not None and ap > 0:
        fixes.append(("repaired offset", f"offset {offset!r} -> apex {ap}"))
        off = ap
    if on is None or off is None or off < on:
        raise DataError(f"{entry['video']}: impossible interval onset {onset!r} apex {apex!r} "
                        f"offset {offset!r}")
    if off > numbers[-1]:
        fixes.append(("repaired offset", f"offset {off} past the last frame -> {numbers[-1]}"))
        off = numbers[-1]
    if on < numbers[0] or on > numbers[-1]:
        raise DataError(f"{entry['video']}: onset frame {on} outside the video "
                        f"({numbers[0]}..{numbers[-1]})")
    if ap is None or not on <= ap <= off:
        fixes.append(("repaired apex", f"apex {apex!r} outside [{on}, {off}] -> middle"))
        ap = (on + off) // 2
    import bisect
    idx = [min(bisect.bisect_left(numbers, n), len(numbers) - 1) for n in (on, ap, off)]
    return dict(subject=entry["subject"], video=entry["video"], path=entry["path"], onset=idx[0],
                apex=idx[1], offset=idx[2], kind=kind, fps=entry["fps"],
                fixes="; ".join(t for _, t in fixes), _fixes=fixes)


def _long_table(rows, sheet, on_error):
    """The intervals from (row number, thunk) records, with the recognition adapters'
    raise/skip handling: "raise" stops at the first bad row naming it; "skip" drops it,
    lists it in ``table.attrs["skipped"]``; skips and repairs are counted in
    ``table.attrs["report"]`` (a DataReport)."""
    import pandas as pd
    out, skipped, report = _read_rows(rows, sheet, on_error, "video")
    cols = ["subject", "video", "path", "onset", "apex", "offset", "kind", "fps", "fixes", "row"]
    table = pd.DataFrame(out, columns=cols)
    table.attrs.update(skipped=skipped, report=report, videos=[], sheet=sheet)
    return table


def _samm_kind(t):
    t = str(t).strip().lower()
    if t.startswith("micro"):
        return "micro"
    if t.startswith("macro"):
        return "macro"
    raise DataError(f"type {t!r} is neither Micro nor Macro")


def load_samm_long(root: str, on_error: str = "raise", fps: Optional[float] = None,
                   sheet_glob: str = "SAMM_LongVideos*.xlsx"):
    """SAMM Long Videos: ``SAMM_LongVideos_V*_Release.xlsx`` (sheet ``FACS_Movement_Only``,
    a preamble, then Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration,
    Type, Action Units, Notes) and ``SAMM_longvideos/006_1/006_1_0001.jpg`` (or
    ``006_1.mp4``); Filename ``006_1_3`` is the 3rd expression of video ``006_1``; 200 fps."""
    import pandas as pd
    sheet = _find_sheet(root, sheet_glob)
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    raw = _read_sheet(sheet, sheet_name="FACS_Movement_Only" if "FACS_Movement_Only" in names else 0,
                      header=None)
    head = [i for i in range(min(len(raw), 40)) if str(raw.iat[i, 0]).strip() == "Subject"]
    if not head:
        raise DataError(f"{sheet}: no header row starting with 'Subject' in the first 40 rows")
    df = raw.iloc[head[0] + 1:].copy()
    df.columns = [str(c).strip() for c in raw.iloc[head[0]]]
    df = df.dropna(how="all")
    _need(df, ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"], sheet)
    vroot = os.path.join(root, "SAMM_longvideos")
    vroot = vroot if os.path.isdir(vroot) else root
    fps = float(fps or SAMM_LONG_FPS)
    videos = {}
    for entry in sorted(os.listdir(vroot)):
        p = os.path.join(vroot, entry)
        name = os.path.splitext(entry)[0]
        if (os.path.isdir(p) or entry.lower().endswith((".mp4", ".avi"))) and "_" in name:
            videos[name] = p

    entries = {}

    def entry_of(name):
        if name not in videos:
            raise DataError(f"video {name} not found in {vroot}")
        if name not in entries:
            inside(root, videos[name], f"video {name}")
            entries[name] = _long_video_entry(name.split("_")[0], name, videos[name], fps)
        return entries[name]

    def make(r):
        name = "_".join(str(r["Filename"]).strip().split("_")[:2])
        return _long_interval(entry_of(name), r["Onset"], r["Apex"], r["Offset"], _samm_kind(r["Type"]))
    rows = [(head[0] + 2 + i, lambda r=r: make(r)) for i, (_, r) in enumerate(df.iterrows())]
    table = _long_table(rows, sheet, on_error)
    bad = []
    for name in videos:  # every video of the set is spotted, with or without expressions
        try:
            entry_of(name)
        except DataError as e:
            if on_error == "raise":
                raise
            bad.append(str(e))
    table.attrs["videos"] = [entries[n] for n in sorted(entries)]
    table.attrs["skipped"] += bad
    return table


def load_synthetic_long(root: str, on_error: str = "raise"):
    """What ``micronbert synth --long`` writes: SAMM-LV's layout and sheet, at the frame
    rate recorded in ``synthetic_long.json``."""
    import json
    meta = os.path.join(root, "synthetic_long.json")
    if not os.path.isfile(meta):
        raise DataError(f"{root}: no synthetic_long.json (written by `micronbert synth --long`)")
    with open(meta) as f:
        fps = json.load(f)["fps"]
    return load_samm_long(root, on_error, fps=fps, sheet_glob="SAMM_LongVideos_synthetic.xlsx")


def load_casme2_long(root: str, on_error: str = "raise"):
    """CAS(ME)^2: ``CAS(ME)^2code_final*.xlsx`` whose first sheet has no header (participant,
    expression name ``anger1_1``, onset, apex, offset, AUs, emotion, type
    ``micro-expression``/``macro-expression``, self-report), sheet ``naming rule1``
    (folder number ``s15`` or 15, ..., participant) and ``naming rule2`` (video code 0401,
    name ``anger1``); frames ``rawpic/s15/15_0401girlcrashing/img1.jpg`` at 30 fps.
    Conventions repaired and listed: offset 0 -> apex; ``disgust1`` missing from naming
    rule2 -> 0101 (a known omission of the release)."""
    import pandas as pd
    sheet = _find_sheet(root, "CAS(ME)^2code_final*.xlsx")
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    for need in ("naming rule1", "naming rule2"):
        if need not in names:
            raise DataError(f"{sheet}: no sheet {need!r} (has {names})")
    main = _read_sheet(sheet, sheet_name=0, header=None)
    if main.shape[1] < 8:
        raise DataError(f"{sheet}: {main.shape[1]} columns, CAS(ME)^2's code sheet has 9")
    rule1 = _read_sheet(sheet, sheet_name="naming rule1", header=None)
    rule2 = _read_sheet(sheet, sheet_name="naming rule2", header=None)
    folder_of = {}
    for _, r in rule1.iterrows():
        p, f = _as_int(r[2]), str(r[0]).strip().lower().lstrip("s")
        if p is not None and f.isdigit():
            folder_of[p] = int(f)
    code_of = {str(r[1]).strip(): _as_int(r[0]) for _, r in rule2.iterrows() if _as_int(r[0]) is not None}
    fixes_global = []
    if "disgust1" not in code_of:
        code_of["disgust1"] = 101
        fixes_global.append("naming rule2 has no disgust1 -> 0101")
    rawpic = os.path.join(root, "rawpic")
    entries = {}

    def entry_of(part, expr):
        if part not in folder_of:
            raise DataError(f"participant {part} not in naming rule1")
        prefix = expr.split("_")[0]
        if prefix not in code_of:
            raise DataError(f"expression {expr!r}: {prefix!r} not in naming rule2")
        n, code = folder_of[part], code_of[prefix]
        hits = sorted(glob.glob(os.path.join(rawpic, f"s{n}", f"{n}_{code:04d}*")))
        if not hits:
            raise DataError(f"no folder {rawpic}/s{n}/{n}_{code:04d}*")
        if hits[0] not in entries:
            entries[hits[0]] = _long_video_entry(f"s{n}", os.path.basename(hits[0]), inside(
                root, hits[0], f"video folder {os.path.basename(hits[0])}"), CASME2_LONG_FPS)
        return entries[hits[0]]

    def make(r):
        t = str(r[7]).strip().lower()
        if not t.startswith(("micro", "macro")):
            raise DataError(f"type {r[7]!r} is neither micro- nor macro-expression")
        row = _long_interval(entry_of(_as_int(r[0]), str(r[1]).strip()), r[2], r[3], r[4], t[:5])
        row["fixes"] = "; ".join(x for x in [row["fixes"]] + fixes_global if x)
        row["_fixes"] += [("repaired naming rule", x) for x in fixes_global]
        return row
    table = _long_table([(i + 1, lambda r=r: make(r)) for i, r in main.iterrows()], sheet, on_error)
    table.attrs["videos"] = [entries[k] for k in sorted(entries)]
    return table


def load_casme3_long(root: str, on_error: str = "raise"):
    """CAS(ME)^3 Part A for spotting: the micro-expression sheet
    ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` (sheet ``label`` when present: Subject,
    Filename, Onset, Apex, Offset, ...) and, when present, the macro-expression sheet
    ``cas(me)3_part_A_MaE_label_JpgIndex_v2*.xlsx`` (sub, seq, onset, apex, offset, ...);
    frame numbers are the JPEG indices of ``spNO.1/a/color/12.jpg``; 30 fps."""
    import pandas as pd
    me = _find_sheet(root, "*_ME_label*.xlsx")
    mae = sorted(glob.glob(os.path.join(root, "*_MaE_label*.xlsx")))
    entries = {}

    def entry_of(subj, seq):
        folder = os.path.join(root, subj, seq, "color")
        folder = folder if os.path.isdir(folder) else os.path.join(root, subj, seq)
        inside(root, folder, f"subject {subj!r} / video {seq!r}")
        if not os.path.isdir(folder):
            raise DataError(f"no frame folder {folder}")
        if folder not in entries:
            entries[folder] = _long_video_entry(subj, f"{subj}_{seq}", folder, CASME2_LONG_FPS)
        return entries[folder]

    rows = []
    for sheet, kind, cols in ((me, "micro", ("Subject", "Filename", "Onset", "Apex", "Offset")),
                              *((m, "macro", ("sub", "seq", "onset", "apex", "offset")) for m in mae[:1])):
        try:
            names = pd.ExcelFile(sheet).sheet_names
        except Exception as e:
            raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
        df = _read_sheet(sheet, sheet_name="label" if "label" in names else 0)
        _need(df, list(cols), sheet)

        def make(r, cols=cols, kind=kind):
            return _long_interval(entry_of(str(r[cols[0]]).strip(), str(r[cols[1]]).strip()),
                                  r[cols[2]], r[cols[3]], r[cols[4]], kind)
        rows += [(f"{i + 2} of {os.path.basename(sheet)}", lambda r=r, make=make: make(r))
                 for i, r in df.iterrows()]
    table = _long_table(rows, me, on_error)
    if not mae:
        table.attrs["skipped"].append(f"{root}: no *_MaE_label*.xlsx sheet: macro-expressions not scored")
    table.attrs["videos"] = [entries[k] for k in sorted(entries)]
    return table


def load_long_annotations(dataset: str, root: str, on_error: str = "raise"):
    """Ground-truth intervals of a long-video set (``LONG_DATASETS``); the videos to spot
    are in ``table.attrs["videos"]``, unusable rows (with ``on_error="skip"``) in
    ``table.attrs["skipped"]``, the repairs per row in the ``fixes`` column."""
    loaders = {"samm_long": load_samm_long, "synthetic_long": load_synthetic_long,
               "casme2_long": load_casme2_long, "casme3_long": load_casme3_long}
    if dataset not in loaders:
        raise ValueError(f"unknown long-video dataset {dataset!r}; known: {sorted(loaders)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return loaders[dataset](root, on_error=on_error)
