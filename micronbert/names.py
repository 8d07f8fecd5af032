"""File names made from names in the data (subjects, videos): safe, unique, mapped back.

``unique_names(ids)`` gives each id a file-name part of ``[A-Za-z0-9._-]`` only (never
empty, never starting with a dot, at most 80 characters before its suffix). An id that is
already such a name keeps it; any other id (``sp 1``, ``casme2/sub01``) gets
``-<crc32 of the id>`` appended, so ``sp 1`` and ``sp_1`` never share ``fold_sp_1.pt``;
ids that differ only in case (one file on a case-insensitive disk) get it too.
``write_names`` writes the mapping beside the files, so each file leads back to its id.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from collections import Counter
from typing import Dict, Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """``name`` as a file-name part: runs of other characters -> ``_``, no leading dot."""
    return _UNSAFE.sub("_", str(name)).lstrip(".")[:80] or "_"


def unique_names(ids: Iterable) -> Dict[str, str]:
    """Each id (as str) -> its file-name part, unique (case ignored); see the module doc."""
    ids = sorted({str(i) for i in ids})
    kept = Counter(i.lower() for i in ids if safe_name(i) == i)
    out = {i: i if safe_name(i) == i and kept[i.lower()] == 1
           else f"{safe_name(i)}-{zlib.crc32(i.encode()):08x}" for i in ids}
    seen = Counter()
    for i in ids:  # a crc32 clash (about 1 in 4e9 per pair): a counter makes it unique
        n = out[i].lower()
        seen[n] += 1
        if seen[n] > 1:
            out[i] = f"{out[i]}-{seen[n]}"
    return out


def write_names(path: str, names: Dict[str, str], what: str) -> None:
    """``path`` (JSON): ``{"what": what, "files": {file-name part: id}}``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"what": what, "files": {n: i for i, n in sorted(names.items())}}, f, indent=2)
