"""Issue 24, a property: every command, driven in-process (cli.main) with random bad flags,
--config files and sheet cells, ends with exit 1 or 2 and one line `micronbert: error: ...`,
no traceback, writes nothing outside --out and changes nothing in an existing run. The
cases are drawn from a fixed seed (reproducible), bounded in count and time."""
import hashlib
import json
import os
import random
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from micronbert import cli
from micronbert.cli.parser import build_parser

SEED, N_FLAGS, N_CONFIGS, N_CELLS, SECONDS = 24, 60, 20, 8, 30

# bound -> values that break it (as typed on the line)
BAD = {"int>=1": ["0", "-3", "2.5", "abc"], "int>=0": ["-1", "x"], "int>=2": ["1", "0"],
       "num>0": ["0", "-1", "nan", "inf"], "float>0": ["0", "-1e-9", "nan", "-inf"],
       "float>=0": ["-0.5", "nan", "inf"], "[0,1]": ["1.5", "-0.1", "nan"], "(0,1]": ["0", "2", "nan"],
       "delta": ["3 1", "0 2"]}
# a JSON value of the wrong kind for a flag of each type (None: a switch)
BAD_JSON = {None: ["false", "1", 0, None, [True]], int: ["3", 2.5, True, [1], "NaN"],
            float: ["0.1", True, "Infinity", [0.1]], str: [3, True, ["a"]]}
# sheet cells that no row can use: each makes the one-row sheet's only row unusable
BAD_CELLS = [("Filename", "../../outside/clip"), ("Filename", "/etc"), ("OnsetFrame", "abc"),
             ("OnsetFrame", -3), ("ApexFrame", 99), ("OffsetFrame", float("nan")),
             ("Subject", "../x"), ("Estimated Emotion", None)]
ROW = {"Subject": 1, "Filename": "EP01", "OnsetFrame": 1, "ApexFrame": 3, "OffsetFrame": 6,
       "Estimated Emotion": "happiness"}


def _tree(root):
    """{relative path: sha1} of every file under ``root`` (links not followed)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha1(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """data/ (a CASME II layout of one clip), run/ (an earlier run's outputs), clip/."""
    root = tmp_path_factory.mktemp("sandbox")
    clip = root / "data" / "sub01" / "EP01"
    clip.mkdir(parents=True)
    for n in range(1, 9):
        Image.fromarray(np.full((16, 16, 3), 20 * n, np.uint8)).save(clip / f"img{n}.png")
    run = root / "run"
    run.mkdir()
    for f in ("last.pt", "log.jsonl", "loss.png", "loso.json", "fold_1.pt", "spot_results.json",
              "motion_maps.png", "results.json"):
        (run / f).write_text("earlier run")
    return root


def _required(cmd, root):
    return {"pretrain": ["--data", str(root / "data")], "finetune": ["--data", str(root / "data")],
            "evaluate": ["--data", str(root / "data")], "spot": ["--video", str(root / "data" / "sub01" / "EP01")],
            "visualize": ["--clip", str(root / "data" / "sub01" / "EP01")]}.get(cmd, [])


def _run(argv, capsys):
    """(exit code, stderr) of main(argv), in-process."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _check(argv, root, capsys, out):
    before = _tree(root)
    code, err = _run(argv, capsys)
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert code in (1, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err, (argv, err)
    assert len(errors) == 1 and errors[0].startswith("micronbert: error: "), (argv, err)
    assert len(errors[0]) <= 1000, errors[0]
    after = _tree(root)
    inside = lambda p: os.path.join(root, p).startswith(str(out) + os.sep)  # noqa: E731
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p) and not inside(p)}
    assert not changed, (argv, sorted(changed))
    run = {p: h for p, h in after.items() if p.startswith("run" + os.sep)}
    assert run == {p: h for p, h in before.items() if p.startswith("run" + os.sep)}, argv


def _cases(rng, tables, root):
    """(argv, out) of random bad flags: one flag of a command given a value that breaks it."""
    cases = []
    while len(cases) < N_FLAGS:
        cmd = rng.choice(sorted(tables))
        flags = [f for f in tables[cmd] if f.bound in BAD or f.choices or f.type is float]
        f = rng.choice(flags)
        value = (rng.choice(BAD[f.bound]) if f.bound in BAD else "bogus" if f.choices
                 else rng.choice(["nan", "inf", "-inf"]))
        if f.nargs and len(value.split()) < f.nargs:
            value = " ".join([value] * f.nargs)
        out = root / rng.choice(["run", f"new{len(cases)}"])
        cases.append(([cmd, *_required(cmd, root), "--out", str(out), f.name, *value.split()], out))
    return cases


def test_random_bad_flags_configs_and_sheet_cells_fail_cleanly(sandbox, capsys):
    rng = random.Random(SEED)
    _, _, tables = build_parser()
    t0 = time.time()
    for argv, out in _cases(rng, tables, sandbox):
        _check(argv, sandbox, capsys, out)
    # --config files: a value of the wrong kind, NaN, a bound broken, an unknown key
    pre = {f.dest: f for f in tables["pretrain"] if f.dest not in ("config", "data", "out")}
    for i in range(N_CONFIGS):
        f = pre[rng.choice(sorted(pre))]
        kind = rng.random()
        if kind < 0.6 and (f.type in BAD_JSON):
            conf = {f.dest: rng.choice(BAD_JSON[f.type])}
        elif kind < 0.8 and f.bound in BAD and f.bound != "delta":
            conf = {f.dest: float(rng.choice(BAD[f.bound]))}
        else:
            conf = {rng.choice(["no_such_flag", "lr2"]): 1}
        path = sandbox / "conf" / f"c{i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(conf))  # NaN/Infinity written as JSON's non-standard constants
        out = sandbox / rng.choice(["run", f"cnew{i}"])
        _check(["pretrain", "--data", str(sandbox / "data"), "--out", str(out), "--config", str(path)],
               sandbox, capsys, out)
    # sheet cells: the one row of a CASME II sheet with one bad cell (and one subject)
    for i in range(N_CELLS):
        col, val = BAD_CELLS[i % len(BAD_CELLS)]
        pd.DataFrame([{**ROW, col: val}]).to_excel(sandbox / "data" / "CASME2-coding-test.xlsx", index=False)
        cmd = rng.choice(["evaluate", "finetune"])
        out = sandbox / rng.choice(["run", f"snew{i}"])
        _check([cmd, "--data", str(sandbox / "data"), "--dataset", "casme2", "--out", str(out),
                "--model", "micronbert_tiny", "--backend", "torch", "--no-baselines"], sandbox, capsys, out)
    os.remove(sandbox / "data" / "CASME2-coding-test.xlsx")
    assert time.time() - t0 < SECONDS, f"{time.time() - t0:.1f} s"
