"""Paths taken from the data stay inside it.

One rule for every reader (the sheet adapters and ``find_clips`` of ``pretrain``): a path
built from a sheet cell, or found by walking ``--data``, is used only when its real path
(every symlink resolved) lies inside the real path of ``--data``. Symlinks that stay inside
are followed; one that leads outside is refused like ``../`` or an absolute path in a
cell: a row error (``--on-error skip``: a counted skip).
"""
from __future__ import annotations

import os

from .io import DataError


def is_inside(root: str, path: str) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``root`` (resolved too)."""
    base, real = os.path.realpath(root), os.path.realpath(path)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def inside(root: str, path: str, what: str = "path") -> str:
    """``path`` when it stays inside ``root`` (``is_inside``), else a DataError naming
    ``what`` (the sheet cell or entry it came from)."""
    if not is_inside(root, path):
        raise DataError(f"{what} leads outside the data folder {root} (to "
                        f"{os.path.realpath(path)}): refused")
    return path
