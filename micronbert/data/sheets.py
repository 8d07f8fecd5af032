"""Cells and sheets of the annotation spreadsheets: reading a sheet, finding it, the columns it
must have, frame numbers and text cells (shared by the clip sheets and the long-video sheets)."""
from __future__ import annotations

import glob
import os

from .io import VIDEO_EXTS, DataError, count_frames, frame_number, list_frames
from .report import DataReport


def read_sheet(path, **kw):
    import pandas as pd
    try:
        return pd.read_excel(path, **kw)
    except Exception as e:
        raise DataError(f"{path}: unreadable sheet ({type(e).__name__}: {e})") from e


def find_sheet(root, pattern):
    sheets = sorted(glob.glob(os.path.join(root, pattern)))
    if not sheets:
        raise DataError(f"{root}: no {pattern} sheet")
    return sheets[0]


def need_columns(df, cols, path):
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {list(df.columns)})")


def as_int(x, what="frame", fixes=None):
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


def text_cell(x, what):
    """A non-empty text cell (emotion, clip name), else a DataError (a NaN cell is not 'nan')."""
    if x is None or (isinstance(x, float) and x != x) or not str(x).strip() \
            or str(x).strip().lower() in ("nan", "none"):
        raise DataError(f"no {what} (empty cell)")
    return str(x).strip()


def frame_numbers(path):
    """Frame numbers of a clip: from the file names of a folder; 1..T for a video (frame k
    of a video is its k-th decoded frame, as the sheet of ``synth --video`` numbers them)."""
    if os.path.isfile(path) and path.lower().endswith(VIDEO_EXTS):
        return list(range(1, count_frames(path) + 1))
    return [frame_number(f) for f in list_frames(path)]


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


def read_rows(records, sheet, on_error, name_key):
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
