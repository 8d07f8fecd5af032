"""What reading the data skipped and repaired: one small, bounded record per command.

``DataReport.add(kind, name)`` counts one event of a kind ("skipped row", "repaired apex",
"skipped clip", ...) and keeps the first ``keep`` names of each kind, so a run over
millions of bad samples holds a few names and a count, never a growing list. A report
travels with an annotation table as ``table.attrs["report"]``, is printed in a command's
summary (``line()``) and written in its result JSON (``as_dict()``).
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional


def is_skip(kind: str) -> bool:
    """Kinds "skipped ..." and "dropped ..." are skips (the row or sample is gone); the rest
    are repairs (the row stays, a value was corrected)."""
    return kind.startswith(("skipped", "dropped"))


class DataReport:
    """Counts and the first ``keep`` names of every skip and repair (thread-safe)."""

    def __init__(self, keep: int = 5):
        self.keep = keep
        self.counts: Dict[str, int] = {}
        self.names: Dict[str, List[str]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, name: str) -> None:
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            names = self.names.setdefault(kind, [])
            if len(names) < self.keep:
                names.append(str(name)[:300])

    def merge(self, other: Optional["DataReport"]) -> "DataReport":
        if other is not None:
            for kind, n in other.counts.items():
                with self._lock:
                    self.counts[kind] = self.counts.get(kind, 0) + n
                    names = self.names.setdefault(kind, [])
                    names += other.names.get(kind, [])[:max(0, self.keep - len(names))]
        return self

    @property
    def skipped(self) -> int:
        return sum(n for k, n in self.counts.items() if is_skip(k))

    @property
    def repaired(self) -> int:
        return sum(n for k, n in self.counts.items() if not is_skip(k))

    def as_dict(self) -> dict:
        """JSON-ready: totals, then per kind its count and first names."""
        return {"skipped": self.skipped, "repaired": self.repaired,
                "kinds": {k: {"count": n, "first": list(self.names.get(k, []))}
                          for k, n in sorted(self.counts.items())}}

    @classmethod
    def from_dict(cls, d: dict, keep: int = 5) -> "DataReport":
        """The report that ``as_dict`` wrote."""
        r = cls(keep)
        for kind, v in (d or {}).get("kinds", {}).items():
            r.counts[kind] = int(v["count"])
            r.names[kind] = list(v["first"])[:keep]
        return r

    def line(self) -> str:
        """One line for a command's summary."""
        if not self.counts:
            return "data: nothing skipped or repaired"
        parts = [f"{n} {k}" + (f" (e.g. {self.names[k][0]})" if self.names.get(k) else "")
                 for k, n in sorted(self.counts.items())]
        return "data: " + "; ".join(parts)

    def __deepcopy__(self, memo):  # pandas copies attrs: a copy is a new, equal report
        r = DataReport(self.keep)
        r.merge(self)
        return r

    def __repr__(self):
        return f"DataReport({self.as_dict()})"
