"""The motion benchmark (issue 25): motion, not place, is the answer; and the regions set
of earlier versions is still written bit for bit."""
import hashlib
import os

import pandas as pd

from micronbert.data.synthetic import write_synthetic_dataset


def tree_hash(root: str) -> str:
    """sha256 over every file's relative path and bytes (the sheet by its content: an xlsx
    carries its creation time)."""
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode())
            h.update(pd.read_excel(p).to_csv(index=False).encode() if f.endswith(".xlsx")
                     else open(p, "rb").read())
    return h.hexdigest()


def test_regions_none_writes_what_earlier_versions_wrote(tmp_path):
    # the reference: main a794b93 (before the motion benchmark), this venv's Pillow/pandas
    root = write_synthetic_dataset(str(tmp_path / "r"), n_subjects=2, clips_per_class=1, seed=3,
                                   progress=False, benchmark="regions")
    assert tree_hash(root) == "0109bbd35e9af7c1c97c7fe9f88d4d5dad1ca76fd055a5f31c2fb1ee23c1160c"
