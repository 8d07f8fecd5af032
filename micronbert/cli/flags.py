"""A flag of the ``micronbert`` command (type, bound, default, help) and the checks of its
values, whether they came from the line or from ``--config`` (``parser.py`` holds the tables)."""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..runs import UsageError

def _isint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _isnum(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


# bound -> (test of a value, what the error says it must be)
BOUNDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "int>=1": (lambda v: _isint(v) and v >= 1, "an integer >= 1"),
    "int>=0": (lambda v: _isint(v) and v >= 0, "an integer >= 0"),
    "num>0": (lambda v: _isnum(v) and v > 0, "a number > 0"),
    "float>0": (lambda v: _isnum(v) and v > 0, "a finite number > 0"),
    "float>=0": (lambda v: _isnum(v) and v >= 0, "a finite number >= 0"),
    "[0,1]": (lambda v: _isnum(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "(0,1]": (lambda v: _isnum(v) and 0 < v <= 1, "a number in (0, 1]"),
    "int>=2": (lambda v: _isint(v) and v >= 2, "an integer >= 2"),
}


@dataclass(frozen=True)
class Flag:
    """One flag: ``type`` None is a switch (``store_true``); ``bound`` a key of BOUNDS."""
    name: str
    help: str
    type: Optional[Callable] = None
    default: Any = None
    bound: Optional[str] = None
    choices: Optional[tuple] = None
    nargs: Optional[int] = None
    metavar: Optional[tuple] = None
    required: bool = False

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    def add_to(self, p: argparse.ArgumentParser) -> None:
        if self.type is None:
            p.add_argument(self.name, action="store_true", help=self.help)
            return
        kw = {k: getattr(self, k) for k in ("choices", "nargs", "metavar") if getattr(self, k) is not None}
        if self.required:
            kw["required"] = True
        else:
            kw["default"] = self.default
        if self.type is not str:
            kw["type"] = self.type
        p.add_argument(self.name, help=self.help, **kw)


# ------------------------------------------------------------------ checks
def check_flags(args, flags: List[Flag]) -> None:
    """The values of a command's flags, whether from the line or from ``--config``, against
    their bounds: a value that cannot work is one UsageError naming the flag."""
    for f in flags:
        v = getattr(args, f.dest, None)
        if v is None:
            continue
        check_type(f, v, f.name)
        if f.bound is None:
            continue
        if f.bound == "delta":
            if len(v) != 2 or not all(_isint(d) for d in v) or not 1 <= v[0] <= v[1]:
                raise UsageError(f"--delta {' '.join(map(str, v))}: needs two integers 1 <= MIN <= MAX")
            continue
        ok, need = BOUNDS[f.bound]
        for x in (v if f.nargs else [v]):
            if not ok(x):
                raise UsageError(f"{f.name} {_show(v)}: must be {need}" + (" each" if f.nargs else ""))
        if f.nargs == 2 and v[0] > v[1]:
            raise UsageError(f"{f.name} {_show(v)}: MIN must not exceed MAX")
    spe, batch = getattr(args, "samples_per_epoch", None), getattr(args, "batch", None)
    if spe is not None and batch is not None and spe < batch:
        raise UsageError(f"--samples-per-epoch {spe} is smaller than --batch {batch}: an epoch "
                         f"would hold no batch; raise --samples-per-epoch or lower --batch")
    if getattr(args, "tensorboard", False):
        import importlib.util
        if importlib.util.find_spec("tensorboard") is None:
            from ..install import install_hint
            raise UsageError(f"--tensorboard needs the package tensorboard: "
                             f"{install_hint('tensorboard')} (or drop --tensorboard)")


def _show(v) -> str:
    return " ".join(map(repr, v)) if isinstance(v, (list, tuple)) else repr(v)


def check_type(f: Flag, v, where: str) -> None:
    """``v`` is a value of flag ``f``'s kind (a JSON boolean for a switch, an integer, a
    finite number, a string; a list of ``nargs`` of them): a UsageError naming ``where``."""
    if f.nargs:
        if not isinstance(v, (list, tuple)) or len(v) != f.nargs:
            raise UsageError(f"{where} {_show(v)}: needs a list of {f.nargs} values")
        for x in v:
            check_type(Flag(f.name, f.help, f.type), x, where)
        return
    kinds = {None: (lambda x: isinstance(x, bool), "a JSON boolean (true or false)"),
             int: (_isint, "an integer"), float: (_isnum, "a finite number"),
             str: (lambda x: isinstance(x, str), "a string")}
    ok, need = kinds.get(f.type, (lambda x: True, ""))
    if not ok(v):
        raise UsageError(f"{where} {_show(v)}: must be {need}")


def given_flags(parser, argv: List[str]) -> set:
    """The dests of the flags actually written in ``argv`` (a parse with no defaults), so
    that ``--config`` fills only what the line left out, even where a flag equals its default."""
    missing = object()
    ns = argparse.Namespace(**{a.dest: missing for a in parser._actions if a.dest != "help"})
    parser.parse_known_args(argv, namespace=ns)
    return {k for k, v in vars(ns).items() if v is not missing}


def apply_config_file(parser, args, argv: List[str], flags: Optional[List[Flag]] = None) -> None:
    """``--config FILE`` (JSON of flag values) fills the flags that ``argv`` (the command's
    own arguments) does not give: flags win, even where one equals its default. Each value
    is checked against ``flags`` (the command's table: its kind, then ``check_flags`` its
    bound); NaN and infinities are refused. Sets ``args.given`` (the dests written on the line)."""
    args.given = given_flags(parser, argv)
    path = getattr(args, "config", None)
    if not path:
        return
    def no_constant(c):
        raise ValueError(f"{c} is not a number a setting may take")
    try:
        with open(path) as f:
            conf = json.load(f, parse_constant=no_constant)
    except (OSError, ValueError) as e:
        raise UsageError(f"--config {path}: cannot read it as JSON ({e})") from e
    if not isinstance(conf, dict):
        raise UsageError(f"--config {path}: needs a JSON object of flag values, got {type(conf).__name__}")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "debug")}
    for k, val in conf.items():
        key = k.replace("-", "_")
        if key not in actions:
            raise UsageError(f"--config {path}: unknown setting {k!r}; known: {', '.join(sorted(actions))}")
        table = {f.dest: f for f in flags or []}
        if key in table and (val is not None or table[key].default is not None):
            check_type(table[key], val, f"--config {path}: {table[key].name}")
        choices = actions[key].choices
        if choices is not None and val not in choices:
            raise UsageError(f"--config {path}: {k} {val!r} is not one of {', '.join(map(str, choices))}")
        if key not in args.given:
            setattr(args, key, val)
