"""Long-video annotation sheets (spotting): SAMM Long Videos, CAS(ME)^2, CAS(ME)^3 long videos
and the synthetic long set, read into one table of ground-truth intervals."""
from __future__ import annotations

import glob
import os
from typing import Optional

from .io import DataError, count_frames
from .paths import inside
from .sheets import as_int, find_sheet, frame_numbers, need_columns, read_rows, read_sheet


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
    numbers = frame_numbers(entry["path"])
    fixes = []
    on, ap, off = as_int(onset, "onset", fixes), as_int(apex, "apex", fixes), as_int(offset, "offset", fixes)
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
    out, skipped, report = read_rows(rows, sheet, on_error, "video")
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
    sheet = find_sheet(root, sheet_glob)
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    raw = read_sheet(sheet, sheet_name="FACS_Movement_Only" if "FACS_Movement_Only" in names else 0,
                      header=None)
    head = [i for i in range(min(len(raw), 40)) if str(raw.iat[i, 0]).strip() == "Subject"]
    if not head:
        raise DataError(f"{sheet}: no header row starting with 'Subject' in the first 40 rows")
    df = raw.iloc[head[0] + 1:].copy()
    df.columns = [str(c).strip() for c in raw.iloc[head[0]]]
    df = df.dropna(how="all")
    need_columns(df, ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"], sheet)
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


def _casme2_naming_rules(sheet):
    """CAS(ME)^2's naming rules: {participant: folder number}, {expression name: video code}
    and the repairs made (``disgust1``, missing from naming rule2, is 0101)."""
    rule1 = read_sheet(sheet, sheet_name="naming rule1", header=None)
    rule2 = read_sheet(sheet, sheet_name="naming rule2", header=None)
    folder_of = {}
    for _, r in rule1.iterrows():
        p, f = as_int(r[2]), str(r[0]).strip().lower().lstrip("s")
        if p is not None and f.isdigit():
            folder_of[p] = int(f)
    code_of = {str(r[1]).strip(): as_int(r[0]) for _, r in rule2.iterrows() if as_int(r[0]) is not None}
    fixes = []
    if "disgust1" not in code_of:
        code_of["disgust1"] = 101
        fixes.append("naming rule2 has no disgust1 -> 0101")
    return folder_of, code_of, fixes


def load_casme2_long(root: str, on_error: str = "raise"):
    """CAS(ME)^2: ``CAS(ME)^2code_final*.xlsx`` whose first sheet has no header (participant,
    expression name ``anger1_1``, onset, apex, offset, AUs, emotion, type
    ``micro-expression``/``macro-expression``, self-report), sheet ``naming rule1``
    (folder number ``s15`` or 15, ..., participant) and ``naming rule2`` (video code 0401,
    name ``anger1``); frames ``rawpic/s15/15_0401girlcrashing/img1.jpg`` at 30 fps.
    Conventions repaired and listed: offset 0 -> apex; ``disgust1`` missing from naming
    rule2 -> 0101 (a known omission of the release)."""
    import pandas as pd
    sheet = find_sheet(root, "CAS(ME)^2code_final*.xlsx")
    try:
        names = pd.ExcelFile(sheet).sheet_names
    except Exception as e:
        raise DataError(f"{sheet}: unreadable sheet ({type(e).__name__}: {e})") from e
    for need in ("naming rule1", "naming rule2"):
        if need not in names:
            raise DataError(f"{sheet}: no sheet {need!r} (has {names})")
    main = read_sheet(sheet, sheet_name=0, header=None)
    if main.shape[1] < 8:
        raise DataError(f"{sheet}: {main.shape[1]} columns, CAS(ME)^2's code sheet has 9")
    folder_of, code_of, fixes_global = _casme2_naming_rules(sheet)
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
        row = _long_interval(entry_of(as_int(r[0]), str(r[1]).strip()), r[2], r[3], r[4], t[:5])
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
    me = find_sheet(root, "*_ME_label*.xlsx")
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
        df = read_sheet(sheet, sheet_name="label" if "label" in names else 0)
        need_columns(df, list(cols), sheet)

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
