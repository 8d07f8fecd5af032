"""The command line's way to SLSTT, for ``micronbert finetune --model slstt_tiny`` (wired by
the CLI: add ``add_slstt_flags`` to finetune's parser and route SLSTT models to ``run_slstt``)."""
from __future__ import annotations

from .model import AGGREGATORS, SLSTT_CONFIGS


def is_slstt(model_name) -> bool:
    return model_name in SLSTT_CONFIGS


def add_slstt_flags(p):
    """SLSTT's own flags of ``finetune`` (beside finetune's: epochs, batch, lr, flip, ...)."""
    p.add_argument("--aggregator", choices=AGGREGATORS, default=None,
                   help="SLSTT's temporal aggregator (default: the config's, lstm)")
    p.add_argument("--flow", choices=("farneback", "tvl1"), default="farneback",
                   help="SLSTT's optical flow (tvl1 needs opencv-contrib's cv2.optflow)")
    p.add_argument("--flow-cache", default=None, help="SLSTT's flow cache folder (default OUT/flow_cache)")


def run_slstt(args, table):
    """``micronbert finetune --model slstt_*`` from finetune's and SLSTT's parsed flags."""
    from ..augment import PairAugment
    from .train import finetune_slstt
    flip = args.flip if args.flip is not None else (0.0 if args.dataset == "synthetic" else 0.5)
    aug = PairAugment(crop_scale=tuple(args.crop_scale), rotate=args.rotate, flip=flip, jitter=args.jitter)
    return finetune_slstt(table, args.out, table.attrs["classes"], model=args.model,
                          aggregator=getattr(args, "aggregator", None), baselines=not args.no_baselines,
                          flow=getattr(args, "flow", "farneback"), flow_cache=getattr(args, "flow_cache", None),
                          face_cache=getattr(args, "face_cache", None), head_epochs=args.head_epochs,
                          save_models=args.save_models, on_error=args.on_error,
                          epochs=args.epochs, batch=args.batch, lr=args.lr, min_lr=args.min_lr,
                          warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay,
                          weight_decay=args.weight_decay, bf16=not args.no_bf16, seed=args.seed, aug=aug)
