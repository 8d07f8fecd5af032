"""Run folders that lose nothing.

- ``check_writable``: an output folder is made and probed at the start of every command,
  so a read-only folder fails at once, not at the first checkpoint or after the work.
- ``claim_run_folder`` / ``run_folder``: the one run-folder contract of every command that
  writes results (pretrain, finetune, evaluate, spot, synth, visualize, demo): takes the
  folder's lock (``runlock.RunLock``: ``OUT/.lock``, flock'ed, taken over atomically from
  a run that ended) for the whole run, refuses a folder that already holds that command's
  outputs (``OUTPUTS``; synth: anything) unless ``--resume`` names its own checkpoint or
  ``--overwrite`` is given (``--overwrite`` moves every earlier output aside into
  ``OUT/replaced-<UTC time>/``, synth's into ``OUT.replaced-<time>/``; nothing is deleted),
  marks the run in ``OUT/.incomplete`` until it ends (a killed run's outputs are named as
  such, half-written fold logs too) and removes the ``.tmp-*`` files of killed writes.
- ``atomic_output``: a result file written beside its place and renamed into it; a full
  disk names the file.
- ``truncate_log``: on resume, ``log.jsonl`` keeps the steps before the resumed one only.
- ``non_finite``: the parameters, buffers and optimiser state that are not finite (a
  checkpoint is written only when there are none).
- ``keep_step_copy``: ``--keep K``: ``OUT/step-<step>.pt`` of the last K checkpoints.
- ``run_settings`` / ``settings_diff``: what a checkpoint records of the run and what a
  resume changes.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional

from .runlock import LOCK, RunError, RunLock, _pid_alive  # noqa: F401 (public names)


class UsageError(ValueError):
    """A flag with a value that cannot work: the message names the flag."""


RUN_FILES = ("last.pt", "pending.pt", "log.jsonl", "tb", "step-*.pt")


# ------------------------------------------------------------------ folders
def _first_missing(folder: str) -> Optional[str]:
    """The outermost folder of ``folder``'s path that does not exist yet (None: it exists)."""
    folder, missing = os.path.abspath(folder), None
    while not os.path.exists(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing


def _remove_empty(folder: str, up_to: Optional[str]) -> None:
    """Remove ``folder`` and its parents up to ``up_to`` (included) while they are empty."""
    if up_to is None:
        return
    folder = os.path.abspath(folder)
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == up_to or len(folder) <= len(up_to):
            return
        folder = os.path.dirname(folder)


def check_writable(folder: str, flag: str = "--out") -> None:
    """Write (then remove) a probe file in ``folder``; fail with one line if that cannot be
    done. Folders made for the probe are removed again (the command makes them when it writes)."""
    made = _first_missing(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise RunError(f"{flag} {folder}: the output folder is not writable ({e.strerror or e}); "
                       f"choose another {flag} or make it writable") from e
    finally:
        _remove_empty(folder, made)


# what each command writes in its --out (glob patterns, relative to it): a folder that holds
# any of them holds a run of that command; --overwrite moves every one of them aside
LOSO_FILES = ("loso.json", "folds.csv", "confusion.png", "loso_bars.png", "fold_names.json",
              "fold_*.jsonl", "fold_*.pt", "untrained")
OUTPUTS = {
    "pretrain": RUN_FILES + ("loss.png",),
    "evaluate": LOSO_FILES, "finetune": LOSO_FILES,
    "spot": ("intervals*.csv", "intervals*.json", "scores.csv", "score.png", "spot_map.mp4", "spot.json",
             "spot_results.json", "spot_f1.png", "videos"),
    "visualize": ("motion_maps.png", "motion_maps.mp4"),
    "synth": ("*",),  # a dataset folder: anything in it (a second synth would mix two sets)
    "demo": ("data", "corpus", "pretrain", "results.*", "motion_maps.png", "loss.png") + LOSO_FILES,
}
MARK = ".incomplete"  # {"command", "pid", "started"} while a run writes; left by a killed run


def holds_run(folder: str, patterns=RUN_FILES) -> List[str]:
    """The files of an earlier run in ``folder`` (those matching ``patterns``, sorted;
    never the ``replaced-*`` folders of earlier overwrites)."""
    found = {os.path.relpath(p, folder) for pat in patterns for p in glob.glob(os.path.join(folder, pat))}
    return sorted(f for f in found if not f.startswith("replaced-"))


def partial_outputs(folder: str) -> List[str]:
    """Outputs a killed run left half-written: fold logs (``fold_*.jsonl``, also under
    ``untrained/``) without their closing ``{"test": ...}`` line."""
    out = []
    for p in sorted(glob.glob(os.path.join(folder, "fold_*.jsonl"))
                    + glob.glob(os.path.join(folder, "untrained", "fold_*.jsonl"))):
        with open(p, errors="replace") as f:
            lines = f.read().splitlines()
        if not lines or '"test"' not in lines[-1]:
            out.append(os.path.relpath(p, folder))
    return out


def remove_stale_tmp(folder: str) -> List[str]:
    """Remove the temporary files of interrupted writes (``.tmp-*``); returns them."""
    stale = sorted(glob.glob(os.path.join(folder, ".tmp-*")))
    for p in stale:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.remove(p)
    return stale


def _raise_on_sigterm(signum, frame):  # so that `finally` blocks run: the lock, temp files
    raise SystemExit(128 + signum)


def _read_mark(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, MARK)) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _move_aside(folder: str, old: List[str], command: str) -> str:
    """Move ``old`` (names in ``folder``) into ``OUT/replaced-<UTC time>/`` (``synth``: the
    sibling ``OUT.replaced-<time>/``, so the new dataset holds no old clip); returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = (os.path.abspath(folder).rstrip(os.sep) + ".replaced-" + stamp if command == "synth"
             else os.path.join(folder, "replaced-" + stamp))
    os.makedirs(aside, exist_ok=True)
    for name in old:
        dst = os.path.join(aside, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(os.path.join(folder, name), dst)
    print(f"micronbert: --overwrite: moved the earlier run's {_names(old)} to {aside}", file=sys.stderr)
    return aside


def _names(files: List[str], most: int = 4) -> str:
    return ", ".join(files[:most]) + (f", ... ({len(files)} in all)" if len(files) > most else "")


@contextlib.contextmanager
def claim_run_folder(folder: str, resume: Optional[str] = None, overwrite: bool = False,
                     rank: int = 0, command: str = "pretrain"):
    """The run folder of any command, held for the run (see the module's docstring).

    Rank 0 takes the lock and checks the folder; the other ranks of a DDP run only wait
    inside. SIGTERM becomes SystemExit while it is held, so the lock and an interrupted
    save's temporary file are removed. ``OUT/.incomplete`` marks the run until it ends
    without an error; a later run finds the outputs of a killed one by it.
    """
    if rank != 0:
        yield None
        return
    check_writable(folder)
    made = _first_missing(folder)
    os.makedirs(folder, exist_ok=True)
    try:
        lock = RunLock(folder).acquire()
    except BaseException:
        _remove_empty(folder, made)
        raise
    old_term, ok, patterns = None, False, OUTPUTS.get(command, RUN_FILES)
    try:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            old_term = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        old, mark = holds_run(folder, patterns), _read_mark(folder)
        if old and not _continues(folder, resume):
            if not overwrite:
                raise RunError(_holds_run_message(folder, old, resume, command, mark))
            _move_aside(folder, old, command)
        stale = remove_stale_tmp(folder)
        if stale:
            print(f"micronbert: removed {len(stale)} temporary file(s) of an interrupted write: "
                  f"{_names([os.path.basename(s) for s in stale])}", file=sys.stderr)
        with open(os.path.join(folder, MARK), "w") as f:
            json.dump({"command": command, "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f)
        yield lock
        ok = True
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if ok or not holds_run(folder, patterns):  # a failed run's outputs stay marked
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, MARK))
        lock.release()
        _remove_empty(folder, made)  # a run refused before it wrote anything leaves no folder


def _continues(folder: str, resume: Optional[str]) -> bool:
    """Whether ``--resume`` continues the run of ``folder`` (its checkpoint lies there)."""
    return bool(resume) and os.path.dirname(os.path.abspath(resume)) == os.path.abspath(folder)


def _holds_run_message(folder: str, old: List[str], resume: Optional[str], command: str = "pretrain",
                       mark: Optional[dict] = None) -> str:
    """The refusal of a folder that holds another run: what to pass, only what exists."""
    files = _names(old)
    if command == "synth":
        return (f"{folder} is not empty ({files}): a second dataset would mix with it; pass "
                f"--overwrite to move its contents to {folder.rstrip(os.sep)}.replaced-<time>/, "
                f"or choose another --out")
    if resume:
        return (f"{folder} already holds another run ({files}) and --resume {resume} is not "
                f"its checkpoint: pass --overwrite to move that run aside, or choose another --out")
    last = os.path.join(folder, "last.pt")
    cont = (f"pass --resume {last} to continue it, "
            if command == "pretrain" and os.path.exists(last) else "")
    unfinished = ""
    if mark is not None:  # OUT/.incomplete: that run was killed or failed
        partial = partial_outputs(folder)
        unfinished = (f" that did not finish ({mark.get('command', 'a command')} killed or failed"
                      + (f"; half-written: {_names(partial)}" if partial else "") + ")")
    return (f"{folder} already holds a run ({files}){unfinished}: {cont}--overwrite to move it "
            f"aside and start afresh, or choose another --out")


def run_folder(args):
    """The command's hold on its ``--out`` (``claim_run_folder``), for every command; only
    rank 0 of a torchrun job (from RANK) claims it."""
    return claim_run_folder(args.out, getattr(args, "resume", None), getattr(args, "overwrite", False),
                            int(os.environ.get("RANK", "0")), args.cmd)


@contextlib.contextmanager
def atomic_output(path: str):
    """Yields a temporary path beside ``path`` (``.tmp-<name>``, the same extension), renamed
    to ``path`` when the body ends: a reader never sees half a file. An OSError (a full disk)
    is raised again naming ``path``; the temporary file is removed."""
    tmp = os.path.join(os.path.dirname(path) or ".", ".tmp-" + os.path.basename(path))
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


# ------------------------------------------------------------------ logs and checkpoints
def truncate_log(path: str, step: int) -> int:
    """Keep the records of ``path`` (JSON lines) with ``step`` < ``step`` (and drop a line cut
    by a kill); atomically. Returns the number of records dropped."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                keep = int(rec["step"]) < step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


def non_finite(model, optimizer=None, most: int = 5) -> List[str]:
    """Names of the parameters, buffers and optimiser state tensors that hold a NaN or an
    infinity (at most ``most``; empty when everything is finite)."""
    import torch
    bad = []
    tensors = list(model.state_dict().items())
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for k, v in optimizer.state.get(p, {}).items():
                    tensors.append((f"optimizer[{names.get(id(p), '?')}].{k}", v))
    for name, t in tensors:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
            if len(bad) >= most:
                break
    return bad


def keep_step_copy(last: str, step: int, keep: Optional[int]) -> None:
    """``--keep K``: ``step-<step>.pt`` beside ``last`` (a hard link where the file system
    allows, else a copy), and only the K newest of them."""
    if not keep:
        return
    folder = os.path.dirname(last)
    dst = os.path.join(folder, f"step-{step:07d}.pt")
    with contextlib.suppress(FileNotFoundError):
        os.remove(dst)
    try:
        os.link(last, dst)
    except OSError:
        shutil.copyfile(last, dst)
    for old in sorted(glob.glob(os.path.join(folder, "step-*.pt")))[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(old)


# run settings (run_settings) a resume may change without --allow-config-change
FREE = ("steps",)  # a longer (or shorter) run: the cosine schedule is stretched from here


def run_settings(tc, loader) -> Dict:
    """The settings of a run that a resume must match (``train``'s config and the loader's)."""
    g = lambda k: getattr(loader, k, None)  # noqa: E731
    batch = g("batch_size")
    return {"lr": tc.lr, "min_lr": tc.min_lr, "warmup": tc.warmup, "weight_decay": tc.weight_decay,
            "accum": tc.accum, "ema": tc.ema, "bf16": tc.bf16,
            "precision": tc.precision if tc.bf16 else "fp32",
            "global_batch": batch * (g("world") or 1) if batch else None,
            "delta": list(g("delta")) if g("delta") is not None else None, "seed": g("seed"),
            "samples_per_epoch": g("samples_per_epoch"),
            "clips": len(g("clips")) if g("clips") is not None else None,
            "face_crop": bool(g("face_cache")), "steps": tc.steps}


def settings_diff(saved: Dict, now: Dict, free=()) -> List[str]:
    """``"name: saved -> now"`` for each setting present in both that differs (not ``free``)."""
    out = []
    for k in now:
        if k in free or k not in saved:
            continue
        a, b = saved[k], now[k]
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = (list(x) if isinstance(x, (list, tuple)) else x for x in (a, b))
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out
