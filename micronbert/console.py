"""What the commands print to a console."""
from __future__ import annotations

import sys


def bar_on(progress: bool = True) -> bool:
    """Whether a progress bar is drawn: asked for, and stderr is a terminal (a log file or a
    pipe gets no bar)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(progress and isatty is not None and isatty())
