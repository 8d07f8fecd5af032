"""Install hints that work from where the user is: a source checkout (``setup.py`` beside the
package) or an installed wheel."""
from __future__ import annotations

import os


def source_root():
    """The source checkout this package runs from (the folder holding its ``setup.py``), or
    None for an installed wheel."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return root if os.path.isfile(os.path.join(root, "setup.py")) else None


def install_hint(extra: str) -> str:
    """The command that installs the optional ``extra`` (setup.py's extras_require)."""
    root = source_root()
    if root is not None:
        return f"pip install -e \".[{extra}]\" (in the checkout {root})"
    return (f"reinstall with the extra [{extra}]: pip install \"<the wheel or checkout you installed "
            f"from>[{extra}]\" (micronbert-fused is not on PyPI)")
