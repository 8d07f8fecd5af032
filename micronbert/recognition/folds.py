"""Leave-one-subject-out folds: the labelled clips, one fold per subject, per-fold seeds."""
from __future__ import annotations

import sys
import zlib
from typing import List

import numpy as np
import torch

from ..data.io import DataError
from ..names import safe_name  # noqa: F401 (public name; fold files use names.unique_names)


def labelled(table, classes: List[str], on_error: str = "raise"):
    """The clips with a label, their labels (K,) as a LongTensor, and the DataReport of the
    table's skips and repairs; a clear error for labels outside ``classes``, fewer than two
    subjects, or a class that has no clip. ``on_error="skip"``: clips whose frames do not
    decode are dropped (and counted in the report)."""
    from ..data.annotations import readable_rows
    from ..data.report import DataReport
    report = DataReport().merge(table.attrs.get("report"))
    table = table[table["label"].notna()].reset_index(drop=True)
    table = readable_rows(table, on_error, report)
    y = torch.tensor(table["label"].astype(int).values, dtype=torch.long)
    n = len(classes)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n):
        raise DataError(f"labels outside 0..{n - 1} for the {n} classes {classes}")
    subjects = sorted(table["subject"].astype(str).unique())
    if len(subjects) < 2:
        raise DataError(f"leave-one-subject-out needs at least 2 subjects with labelled clips; "
                        f"the table has {len(subjects)} ({subjects}, {len(table)} clips)")
    absent = [classes[c] for c in range(n) if not (y == c).any()]
    if absent:
        raise DataError(f"classes {absent} have no labelled clip: no head can learn them, and "
                        f"UF1/UAR would count them as 0; use a class map without them "
                        f"(--class-map) or add their clips")
    return table, y, report

def loso_splits(subjects, labels, n_classes: int):
    """One fold per subject: [{"subject", "train" (bool K), "test" (bool K), "missing_classes"
    (classes of the held-out subject that no training subject holds)}] and the folds
    skipped because their training subjects hold fewer than 2 classes ([{subject, n, reason}]).
    Every training mask excludes its held-out subject, by construction and checked."""
    subjects = np.asarray(subjects).astype(str)
    y = np.asarray(labels)
    splits, skipped = [], []
    for s in sorted(set(subjects)):
        test = subjects == s
        train = ~test
        assert not (set(subjects[train]) & {s}), "held-out subject in its training fold"
        present = sorted(set(y[train].tolist()))
        if len(present) < 2:
            skipped.append({"subject": str(s), "n": int(test.sum()),
                            "reason": f"its training subjects hold {len(present)} class(es) "
                                      f"{present}: a head cannot be trained"})
            continue
        missing = sorted(set(y[test].tolist()) - set(present))
        if missing:  # the head cannot predict them: that subject's clips of them are lost
            print(f"[loso] fold {s}: its training subjects hold no clip of class(es) {missing} "
                  f"that it holds; flagged in loso.json", file=sys.stderr)
        splits.append({"subject": str(s), "train": train, "test": test, "missing_classes": missing})
    if not splits:
        raise DataError(f"no LOSO fold can be trained: {skipped}")
    for k in skipped:
        print(f"[loso] fold {k['subject']} skipped ({k['n']} clips unscored): {k['reason']}",
              file=sys.stderr)
    return splits, skipped

def fold_seed(seed: int, subject: str) -> int:
    """A per-fold seed from the run's seed and the held-out subject (the same in every process)."""
    return (seed * 1_000_003 + zlib.crc32(subject.encode())) % (2 ** 63)

def class_weights(y, n_classes: int) -> torch.Tensor:
    """Class-balanced loss weights: K / (C * count_c) (count clamped at 1)."""
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)
