"""The ``micronbert`` command: demo, synth, spot, pretrain, evaluate, finetune, visualize.

``main`` parses the line (``parser``: one table of flags per command), fills what the line
leaves out from ``--config``, checks every value, and runs the command (``commands``,
``demo``); any error is one line ``micronbert: error: ...`` (``--debug``: the traceback).
"""
from __future__ import annotations

import re
import sys
from typing import Dict

from ..install import install_hint
from . import commands
from .demo import demo

# command -> the function that runs it on the parsed flags
COMMANDS = {"demo": demo, "synth": commands.cmd_synth, "spot": commands.cmd_spot,
            "pretrain": commands.cmd_pretrain, "evaluate": commands.cmd_evaluate,
            "finetune": commands.cmd_finetune, "visualize": commands.cmd_visualize}

# modules of the optional extras (setup.py) -> the extra that installs them
EXTRAS = {"av": "cli", "cv2": "cli", "pandas": "cli", "openpyxl": "cli", "PIL": "cli",
          "skimage": "cli", "scipy": "cli", "tqdm": "cli", "matplotlib": "cli", "nvidia": "dali",
          "tensorboard": "tensorboard"}

# what an error's one line says before its message, by kind: ours and the OS's name the
# input themselves; anything else is unexpected and names its type
_OWN = ("DataError", "CheckpointError", "RunError", "UsageError", "NonFiniteLoss", "ConfigMismatch")


# an error's line is cut after this many characters; numbers keep 4 significant digits
MAX_LINE = 400
_LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e[-+]?\d+)?|(?<![\w.])-?\d\.\d+e[-+]?\d+")


def short(msg: str, most: int = MAX_LINE) -> str:
    """``msg`` on one line, its long numbers shortened (``0.123456789`` -> ``0.1235``), cut
    at ``most`` characters."""
    msg = " ".join(str(msg).split())
    msg = _LONG_NUMBER.sub(lambda m: f"{float(m.group()):.4g}", msg)
    if len(msg) <= most:  # else its middle is cut: the head names the input, the tail what to do
        return msg
    return msg[:most // 2 - 2] + " ... " + msg[len(msg) - (most - most // 2 - 3):]


def error_line(e: BaseException, extras: Dict[str, str] = EXTRAS) -> str:
    """The one line (without the ``micronbert: error:`` prefix) that a CLI error prints.
    ``extras``: top-level module -> the pip extra that installs it."""
    msg = short(e)
    if isinstance(e, ModuleNotFoundError):
        extra = extras.get((e.name or "").split(".")[0])
        where = install_hint(extra) if extra else f"pip install {e.name}"
        return f"needs the Python module {e.name!r}, which this install leaves out: {where}"
    if isinstance(e, (OSError, ValueError, ImportError)) or any(c.__name__ in _OWN for c in type(e).__mro__):
        return msg or type(e).__name__
    return f"{type(e).__name__}: {msg} (unexpected: rerun with --debug for the traceback)"


def check(args, flags) -> None:
    """Every value of the command's flags, and what no single flag says."""
    from ..runs import UsageError
    from .flags import check_flags
    check_flags(args, flags)
    if getattr(args, "warmup", 0) > getattr(args, "steps", 1 << 60):  # cosine_lr caps it
        print(f"[{args.cmd}] --warmup {args.warmup} is longer than --steps {args.steps}: "
              f"capped at {args.steps}", file=sys.stderr)
    if args.cmd == "spot" and bool(args.video) == bool(args.data):
        raise UsageError("spot needs --video V, or --data DIR with --dataset")
    if args.cmd == "visualize" and not args.clip and not (args.frame_a and args.frame_b):
        raise UsageError("visualize needs --clip, or --frame-a and --frame-b")
    check_resources(args)


def check_resources(args) -> None:
    """Sizes whose memory is estimated before the work (micronbert/memory.py): spot's face
    crops (--flow-size, the model's image), synth's frames (--size, --fps, --seconds)."""
    from .. import memory
    from ..runs import UsageError
    try:
        if args.cmd == "spot" and args.method != "model":
            window = min(256, max(1, round(args.fps))) if args.video else 256
            memory.check_bytes(memory.spot_bytes(window, crop_sizes=(args.flow_size,)),
                               f"spot --flow-size {args.flow_size} ({window}-frame chunks)",
                               "lower --flow-size (the face crop of the flow baseline)")
        if args.cmd == "synth":
            size = args.size or (128 if args.long else 64)
            frames = round(args.fps * args.seconds) if args.long else 12  # synthetic_clip's n_frames
            memory.check_bytes(memory.synth_bytes(frames, size, 1 if args.long else frames),
                               f"synth --size {size} ({frames} frames per {'video' if args.long else 'clip'})",
                               "lower --size" + (", --fps or --seconds" if args.long else ""))
    except MemoryError as e:
        raise UsageError(str(e)) from e


def main(argv=None) -> int:
    """Run ``micronbert`` on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from .. import runs
    from .flags import apply_config_file
    from .parser import build_parser, model_default
    parser, subparsers, tables = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.cmd is None:  # no command: the command list
        parser.print_help()
        return 0
    try:
        apply_config_file(subparsers[args.cmd], args, argv[argv.index(args.cmd) + 1:], tables[args.cmd])
        if getattr(args, "model", "") is None:
            args.model = model_default()
        check(args, tables[args.cmd])  # every flag, before any work
        with runs.run_folder(args):  # the lock, overwrite protection, interrupted runs, temp files
            COMMANDS[args.cmd](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("micronbert: interrupted", file=sys.stderr)
        raise SystemExit(130)
    except Exception as e:  # one line; --debug: the traceback
        if args.debug:
            raise
        print(f"micronbert: error: {error_line(e)}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, runs.UsageError) else 1)
    return 0

