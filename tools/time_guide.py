"""Time the README's step-by-step guide on this machine and write docs/guide_times.md.

    .venv/bin/python tools/time_guide.py [--out docs/guide_times.md] [--workdir DIR]

Runs each command of GUIDE (the README's lines, word for word; tests/test_docs.py checks
that the README holds them) in a scratch folder, in order, and records its wall time and
the machine's load (1-minute load average before it starts: the project's machine is
shared, so a loaded run is slower)."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

# the README's guide, in order: (what it does, the command as the README prints it)
GUIDE = [
    ("a synthetic labelled set", "micronbert synth --out data/synth"),
    ("pre-train micronbert_tiny 200 steps",
     "micronbert pretrain --data data/synth --out runs/pt --model micronbert_tiny --batch 8 --steps 200"),
    ("LOSO linear probe beside baselines",
     "micronbert evaluate --data data/synth --checkpoint runs/pt/last.pt --out runs/ev"),
    ("maps of one clip", "micronbert visualize --checkpoint runs/pt/last.pt "
                         "--clip data/synth/sub01/EP01_01 --out runs/viz"),
    ("resume to 400 steps", "micronbert pretrain --data data/synth --out runs/pt --model micronbert_tiny "
                            "--batch 8 --steps 400 --resume runs/pt/last.pt"),
]


def run_guide(workdir: str):
    """[(what, command, seconds, load before, exit status)] of GUIDE run in ``workdir``."""
    rows = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    for what, line in GUIDE:
        argv = shlex.split(line)
        load = os.getloadavg()[0]
        t = time.time()
        rc = subprocess.run([sys.executable, "-m", "micronbert.cli", *argv[1:]], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sec = time.time() - t
        if rc.returncode:
            print(rc.stderr[-2000:], file=sys.stderr)
        rows.append((what, line, sec, load, rc.returncode))
        print(f"{sec:7.1f} s  load {load:4.1f}  rc {rc.returncode}  {line}", flush=True)
    return rows


def markdown(rows) -> str:
    import torch
    lines = ["# The README's guide, timed", "",
             f"Written by `tools/time_guide.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"torch {torch.__version__}, CPU only. The machine is shared: the load column is the "
             f"1-minute load average before each command (above {os.cpu_count()}, other work slowed it).",
             "", "| step | command | seconds | load | exit |", "|---|---|---|---|---|"]
    lines += [f"| {w} | `{c}` | {s:.0f} | {ld:.1f} | {rc} |" for w, c, s, ld, rc in rows]
    return "\n".join(lines) + "\n"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "guide_times.md"), help="the table")
    ap.add_argument("--workdir", help="where data/ and runs/ go (default: a temporary folder)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_guide(a.workdir or tmp)
    with open(a.out, "w") as f:
        f.write(markdown(rows))
    print(f"wrote {a.out}")
    return max(r[4] for r in rows)


if __name__ == "__main__":
    raise SystemExit(main())
