"""Annotation sheets of the micro-expression datasets, read into one table:
subject, clip, path, onset, apex, offset, emotion, label (+ fixes: what was repaired).

Supported here: ``casme2`` (CASME II, and the synthetic set written in its layout).
Class maps: CASME II 5-class, CAS(ME)^3 7/4/3-class, MEGC2019 composite 3-class.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, Optional

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


def load_casme2(root: str, class_map: str = "casme2_5", on_error: str = "raise"):
    """CASME II: ``CASME2-coding-*.xlsx`` and ``sub01/EP02_01f/img46.jpg`` (or reg_img46.jpg).

    ``class_map="own"`` numbers the sheet's emotions in sorted order (synthetic set).
    ``on_error``: "raise" (an error naming the row) or "skip" (the row is dropped and
    listed in ``table.attrs["skipped"]``).
    """
    import pandas as pd
    sheets = sorted(glob.glob(os.path.join(root, "CASME2-coding-*.xlsx")))
    if not sheets:
        raise DataError(f"{root}: no CASME2-coding-*.xlsx sheet")
    df = _read_sheet(sheets[0])
    need = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{sheets[0]}: missing columns {missing}")
    own = sorted({str(e).strip().lower() for e in df["Estimated Emotion"]}) if class_map == "own" else None
    rows, skipped = [], []
    for i, r in df.iterrows():
        try:
            subj = f"sub{int(r['Subject']):02d}"
            clip = str(r["Filename"]).strip()
            folder = os.path.join(root, subj, clip)
            frames = list_frames(folder)
            numbers = [frame_number(f) for f in frames]
            fixes = []
            onset, offset = int(r["OnsetFrame"]), r["OffsetFrame"]
            try:
                offset = int(offset)
            except (TypeError, ValueError):
                offset = 0
            if offset == 0 or offset < onset:  # missing or impossible offset: last frame
                fixes.append(f"offset {r['OffsetFrame']!r} -> last frame {numbers[-1]}")
                offset = numbers[-1]
            try:
                apex = int(r["ApexFrame"])
            except (TypeError, ValueError):  # '/' in the sheet: the middle frame
                apex = (onset + offset) // 2
                fixes.append(f"apex {r['ApexFrame']!r} -> middle {apex}")
            if not onset <= apex <= offset:
                fixes.append(f"apex {apex} outside [{onset}, {offset}] -> middle")
                apex = (onset + offset) // 2
            for name, n in (("onset", onset), ("apex", apex), ("offset", offset)):
                if n not in numbers:
                    raise DataError(f"{folder}: {name} frame {n} missing")
            emotion = str(r["Estimated Emotion"]).strip().lower()
            label = own.index(emotion) if own is not None else label_of(emotion, class_map)
            rows.append(dict(subject=subj, clip=clip, path=folder, onset=onset, apex=apex,
                             offset=offset, onset_index=numbers.index(onset),
                             apex_index=numbers.index(apex), n_frames=len(frames),
                             emotion=emotion, label=label, fixes="; ".join(fixes)))
        except DataError as e:
            if on_error == "raise":
                raise DataError(f"{sheets[0]} row {i + 2}: {e}") from e
            skipped.append(f"row {i + 2}: {e}")
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    table.attrs["classes"] = own if own is not None else sorted(
        CLASS_MAPS[class_map], key=CLASS_MAPS[class_map].get)
    return table


def load_annotations(dataset: str, root: str, class_map: Optional[str] = None, on_error="raise"):
    """One table for a dataset: subject, clip, path, onset, apex, offset, emotion, label."""
    if dataset in ("casme2", "synthetic"):
        return load_casme2(root, class_map or ("own" if dataset == "synthetic" else "casme2_5"),
                           on_error)
    if dataset in ("samm", "smic", "casme3"):
        raise NotImplementedError(f"the {dataset} adapter is not written yet (issue: data loaders); "
                                  "supported: casme2, synthetic")
    raise ValueError(f"unknown dataset {dataset!r}")
