"""The command line's way to SLSTT: ``micronbert finetune --model slstt_tiny`` goes to
``run_slstt`` (its flags are in ``cli.parser.slstt_flags``), and ``--baselines ...,slstt``
of ``evaluate``/``finetune`` to ``baseline_options``."""
from __future__ import annotations

import json

from .model import SLSTT_CONFIGS


def is_slstt(model_name) -> bool:
    return model_name in SLSTT_CONFIGS


def check_slstt_args(args) -> None:
    """What an SLSTT run of ``finetune`` cannot take (or a bad ``--overrides``), as one
    UsageError naming the flag."""
    from ..runs import UsageError
    if getattr(args, "checkpoint", None):
        raise UsageError(f"--model {args.model} trains SLSTT from scratch per fold: drop --checkpoint")
    if getattr(args, "freeze", False):
        raise UsageError(f"--model {args.model} has no pre-trained encoder to freeze: drop --freeze")
    from ..train import dist_info
    if dist_info()[1] > 1:
        raise UsageError(f"--model {args.model} runs in one process (no torchrun)")
    _overrides(args)
    check_flow(args)


def check_flow(args) -> None:
    """``--flow tvl1`` where this OpenCV has no TV-L1: a UsageError before any work."""
    from ..runs import UsageError
    from .flow import tvl1_unavailable_reason
    if getattr(args, "flow", "farneback") == "tvl1" and tvl1_unavailable_reason():
        raise UsageError(f"--flow tvl1: {tvl1_unavailable_reason()}")


def _overrides(args) -> dict:
    from ..runs import UsageError
    try:
        over = json.loads(args.overrides) if getattr(args, "overrides", None) else {}
        if not isinstance(over, dict):
            raise ValueError("not a JSON object")
        from .model import get_slstt_config
        get_slstt_config(args.model, aggregator=getattr(args, "aggregator", None), **over)  # checked now
        return over
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {args.model} --overrides {args.overrides!r}: {e}") from e


def baseline_options(args) -> dict:
    """``slstt.train.baseline_row``'s options from the parsed flags (the "slstt" row)."""
    return {"aggregator": getattr(args, "aggregator", None), "flow": getattr(args, "flow", "farneback"),
            "flow_cache": getattr(args, "flow_cache", None), "face_cache": getattr(args, "face_cache", None)}


def run_slstt(args, table, aug, baselines):
    """``micronbert finetune --model slstt_*`` from finetune's and SLSTT's parsed flags
    (``aug`` the PairAugment finetune builds, ``baselines`` its ``--baselines``)."""
    from .train import finetune_slstt
    return finetune_slstt(table, args.out, table.attrs["classes"], model=args.model, baselines=baselines,
                          head_epochs=args.head_epochs, save_models=args.save_models, on_error=args.on_error,
                          slstt_overrides=_overrides(args), **baseline_options(args),
                          epochs=args.epochs, batch=args.batch, lr=args.lr, min_lr=args.min_lr,
                          warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay,
                          weight_decay=args.weight_decay, bf16=not args.no_bf16, seed=args.seed, aug=aug)
