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

from .io import DataError, frame_number, list_frames

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


def _as_int(x):
    try:
        v = int(float(x))
    except (TypeError, ValueError):
        return None
    return v


def _clip_row(subject, clip, folder, onset, apex, offset, emotion, label):
    """One table row; repairs (and lists) the known kinds of sheet errors: a missing or
    impossible offset (-> last frame), a missing apex ('/', -1: -> middle), an apex outside
    [onset, offset] (-> middle). A frame that is not on disk is an error."""
    frames = list_frames(folder)
    numbers = [frame_number(f) for f in frames]
    fixes = []
    onset = _as_int(onset)
    if onset is None or onset not in numbers:
        raise DataError(f"{folder}: onset frame {onset} missing")
    off = _as_int(offset)
    if off is None or off <= 0 or off < onset:
        fixes.append(f"offset {offset!r} -> last frame {numbers[-1]}")
        off = numbers[-1]
    ap = _as_int(apex)
    if ap is None or ap < 0:
        fixes.append(f"apex {apex!r} -> middle {(onset + off) // 2}")
        ap = (onset + off) // 2
    elif not onset <= ap <= off:
        fixes.append(f"apex {ap} outside [{onset}, {off}] -> middle")
        ap = (onset + off) // 2
    for name, n in (("apex", ap), ("offset", off)):
        if n not in numbers:  # a repaired value may fall between numbered frames
            if name == "apex" and fixes:
                n = min(numbers, key=lambda m: abs(m - n))
                ap = n
            else:
                raise DataError(f"{folder}: {name} frame {n} missing")
    return dict(subject=subject, clip=clip, path=folder, onset=onset, apex=ap, offset=off,
                onset_index=numbers.index(onset), apex_index=numbers.index(ap), n_frames=len(frames),
                emotion=emotion, label=label, fixes="; ".join(fixes))


def _table(records, sheet, class_map, on_error, own_classes=None):
    """Build the table from (row number, thunk) records; 'skip' lists the failures."""
    import pandas as pd
    rows, skipped = [], []
    for rownum, make in records:
        try:
            rows.append(make())
        except DataError as e:
            if on_error == "raise":
                raise DataError(f"{sheet} row {rownum}: {e}") from e
            skipped.append(f"row {rownum}: {e}")
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    table.attrs["classes"] = own_classes if own_classes is not None else sorted(
        CLASS_MAPS[class_map], key=CLASS_MAPS[class_map].get)
    return table


def _label(emotion, class_map, own):
    return own.index(emotion) if own is not None else label_of(emotion, class_map)


def load_casme2(root: str, class_map: str = "casme2_5", on_error: str = "raise"):
    """CASME II: ``CASME2-coding-*.xlsx`` and ``sub01/EP02_01f/img46.jpg`` (or reg_img46.jpg).

    ``class_map="own"`` numbers the sheet's emotions in sorted order (synthetic set).
    ``on_error``: "raise" (an error naming the row) or "skip" (the row is dropped and
    listed in ``table.attrs["skipped"]``).
    """
    sheet = _find_sheet(root, "CASME2-coding-*.xlsx")
    df = _read_sheet(sheet)
    _need(df, ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"], sheet)
    own = sorted({str(e).strip().lower() for e in df["Estimated Emotion"]}) if class_map == "own" else None

    def make(r):
        subj, clip = f"sub{int(r['Subject']):02d}", str(r["Filename"]).strip()
        emo = str(r["Estimated Emotion"]).strip().lower()
        return _clip_row(subj, clip, os.path.join(root, subj, clip), r["OnsetFrame"], r["ApexFrame"],
                         r["OffsetFrame"], emo, _label(emo, class_map, own))
    return _table([(i + 2, lambda r=r: make(r)) for i, r in df.iterrows()], sheet, class_map, on_error, own)


def load_samm(root: str, class_map: str = "megc2019_3", on_error: str = "raise"):
    """SAMM: ``SAMM_Micro_FACS_Codes_v2.xlsx`` (header on row 14), frames
    ``006/006_1_2/006_05562.jpg`` (grey)."""
    sheet = _find_sheet(root, "SAMM_Micro_FACS_Codes*.xlsx")
    df = _read_sheet(sheet, header=13)
    _need(df, ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion"], sheet)

    def make(r):
        subj, clip = f"{int(r['Subject']):03d}", str(r["Filename"]).strip()
        emo = str(r["Estimated Emotion"]).strip().lower()
        return _clip_row(subj, clip, os.path.join(root, subj, clip), r["Onset Frame"], r["Apex Frame"],
                         r["Offset Frame"], emo, label_of(emo, class_map))
    return _table([(i + 15, lambda r=r: make(r)) for i, r in df.iterrows()], sheet, class_map, on_error)


def load_smic(root: str, class_map: str = "megc2019_3", on_error: str = "raise"):
    """SMIC (HS, VIS or NIR folder as ``root``): ``s1/micro/negative/s1_ne_01/image012345.bmp``;
    the class comes from the folder, onset/offset are the first/last frames, apex the middle."""
    folders = sorted(glob.glob(os.path.join(root, "s*", "micro", "*", "*")))
    if not folders:
        raise DataError(f"{root}: no s*/micro/<class>/<clip> folders (SMIC layout)")

    def make(folder):
        parts = folder.split(os.sep)
        subj, emo, clip = parts[-4], parts[-2].lower(), parts[-1]
        numbers = [frame_number(f) for f in list_frames(folder)]
        return _clip_row(subj, clip, folder, numbers[0], (numbers[0] + numbers[-1]) // 2,
                         numbers[-1], emo, label_of(emo, class_map))
    return _table([(f, lambda f=f: make(f)) for f in folders], root, class_map, on_error)


def load_casme3(root: str, class_map: str = "casme3_7", on_error: str = "raise"):
    """CAS(ME)^3 Part A: a sheet (sheet ``label`` when present) with Subject, Filename,
    Onset, Apex, Offset, AU, Objective class, emotion; frames ``spNO.1/a/color/12.jpg``."""
    sheet = _find_sheet(root, "*.xlsx")
    import pandas as pd
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    df = _read_sheet(sheet, sheet_name="label" if "label" in names else 0)
    _need(df, ["Subject", "Filename", "Onset", "Apex", "Offset", "emotion"], sheet)

    def make(r):
        subj, clip = str(r["Subject"]).strip(), str(r["Filename"]).strip()
        emo = str(r["emotion"]).strip().lower()
        folder = os.path.join(root, subj, clip, "color")
        if not os.path.isdir(folder):
            folder = os.path.join(root, subj, clip)
        return _clip_row(subj, clip, folder, r["Onset"], r["Apex"], r["Offset"], emo,
                         label_of(emo, class_map))
    return _table([(i + 2, lambda r=r: make(r)) for i, r in df.iterrows()], sheet, class_map, on_error)


LOADERS = {"casme2": load_casme2, "samm": load_samm, "smic": load_smic, "casme3": load_casme3}


def load_annotations(dataset: str, root: str, class_map: Optional[str] = None, on_error="raise"):
    """One table for a dataset: subject, clip, path, onset, apex, offset, emotion, label
    (+ onset/apex indices, frame count, and the repairs made in ``fixes``)."""
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
