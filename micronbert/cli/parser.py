"""The ``micronbert`` command's flags: one table of ``flags.Flag`` per command (type, bound,
default, help), from which the parser is built and against which ``flags.check_flags``
checks every value, whether it came from the line or from ``--config``. Defaults that a
library dataclass or factory also has (``TrainConfig``, ``FinetuneConfig``,
``pretrain_loader``) are read from it, so the two cannot drift."""
from __future__ import annotations

import argparse
import inspect
from dataclasses import is_dataclass
from typing import List

from ..kernels.backend import BACKENDS, PRECISIONS
from .flags import Flag

DATASETS = ("casme2", "samm", "smic", "casme3", "megc2019", "synthetic")


def default(source, name: str):
    """The default of field ``name`` of a dataclass, or of parameter ``name`` of a function."""
    if is_dataclass(source):
        return getattr(source(), name)
    return inspect.signature(source).parameters[name].default


# ------------------------------------------------------------------ the tables
# --model's default (model_default): the demo's model on a CPU, the paper's on CUDA
CPU_MODEL, CUDA_MODEL = "micronbert_tiny", "micronbert_s8"
MODEL_DEFAULT = f"default: {CPU_MODEL} on a CPU (the demo's), {CUDA_MODEL} (the paper's) on CUDA"


def model_default() -> str:
    """--model when the line and --config leave it out: what fits this machine."""
    import torch
    return CUDA_MODEL if torch.cuda.is_available() else CPU_MODEL


def model_flags(models, checkpoint="ours or the authors' checkpoint (without it: untrained weights)",
                model="named config (without --checkpoint)") -> List[Flag]:
    """--checkpoint, --model, --overrides, --backend and --precision: which model a command
    runs, and how."""
    return [Flag("--checkpoint", checkpoint, str),
            Flag("--model", f"{model}; {MODEL_DEFAULT}", str, None, choices=models),
            Flag("--overrides", "JSON of config overrides", str),
            backend_flag(), precision_flag()]


def precision_flag() -> Flag:
    return Flag("--precision", "arithmetic of the model: auto = bf16 autocast on CUDA and on CPUs "
                "with native bf16 matrix units (AMX, AVX512-BF16), fp32 elsewhere; weights, "
                "optimiser state and checkpoints stay fp32", str, "auto", choices=PRECISIONS)


def backend_flag() -> Flag:
    return Flag("--backend", "path of attention, DMA and the swap: auto = the fused Triton kernels on "
                "CUDA, plain PyTorch on the CPU; reference = the readable spec; triton "
                "fails with the reason where it cannot run", str, "auto", choices=BACKENDS)


def overwrite_flag() -> Flag:
    return Flag("--overwrite", "--out already holds this command's outputs: move them aside to "
                "OUT/replaced-<time>/ (nothing is deleted)")


def demo_flags(models) -> List[Flag]:
    return [
        Flag("--out", "output folder", str, "runs/demo"),
        Flag("--steps", "pre-training steps", int, 600, "int>=1"),
        Flag("--batch", "batch size", int, 32, "int>=1"),
        Flag("--lr", "peak learning rate", float, 2e-3, "float>0"),
        Flag("--subjects", "synthetic subjects (faces)", int, 8, "int>=1"),
        Flag("--clips-per-class", "clips per class and subject", int, 3, "int>=1"),
        Flag("--held-out", "labeled subjects whose maps are scored (the others' masks make the "
             "location prior)", int, 2, "int>=1"),
        Flag("--corpus-faces", "other faces whose unlabeled clips (motion anywhere) are the whole "
             "pre-training set: no face that LOSO scores", int, 48, "int>=1"),
        Flag("--corpus-clips", "unlabeled clips per corpus face", int, 8, "int>=1"),
        Flag("--model", "named config: micronbert_tiny (the paper's method) or our variant "
             "micronbert_tiny_nullkey", str, "micronbert_tiny", choices=models),
        Flag("--overrides", "JSON of model config overrides, e.g. {\"lambda_diag\": 1.0}", str),
        Flag("--nuisance", "nuisance of the synthetic clips (synth --nuisance): head motion, light, "
             "noise, blur, JPEG; none: the clean set a subtraction wins", str, "medium",
             choices=("none", "low", "medium", "high")),
        Flag("--benchmark", "synthetic benchmark (synth --benchmark): motion = classes are the kind "
             "and direction of the motion at a place drawn per clip; regions = one fixed region per "
             "class (the earlier demo's set)", str, "motion", choices=("motion", "regions")),
        backend_flag(), precision_flag(),
        Flag("--seed", "seed of everything", int, 0),
        overwrite_flag(),
    ]


def synth_flags(models) -> List[Flag]:
    return [
        Flag("--out", "output folder", str, required=True),
        Flag("--subjects", "subjects (faces, at most 101)", int, 8, "int>=1"),
        Flag("--clips-per-class", "clips per class and subject", int, 3, "int>=1"),
        Flag("--size", "frame size in pixels (64; --long: 128)", int, None, "int>=1"),
        Flag("--fps", "frame rate (the expression lasts <= 0.5 s)", int, 30, "num>0"),
        Flag("--video", "write H.264 videos instead of JPEG folders"),
        Flag("--nuisance", "head motion, light, blur, noise and compression (JPEG quality; H.264 CRF "
             "with --video), amplitudes 0.5-3 px and a no_motion class "
             "(micronbert.data.synthetic.NUISANCE); none: the clean set. With --long: "
             "head drift, blinks, illumination, noise, compression "
             "(micronbert.data.synthetic_long.NUISANCE). Default: none; --long: medium", str, None,
             choices=("none", "low", "medium", "high")),
        Flag("--seed", "seed", int, 0),
        Flag("--benchmark", "motion: classes are the kind and direction of the motion at a place drawn "
             "per clip (micronbert.data.synthetic_motion); regions: one fixed region per class, the set "
             "of earlier versions (place answers). Not with --long", str, "motion",
             choices=("motion", "regions")),
        Flag("--long", "long videos for spotting (SAMM Long Videos layout and sheet) with nuisance "
             "and micro/macro-expressions at known frames"),
        Flag("--seconds", "--long: seconds per video", float, 30.0, "num>0"),
        Flag("--videos-per-subject", "--long: videos per subject", int, 2, "int>=1"),
        Flag("--overwrite", "--out is not empty: move its contents aside to OUT.replaced-<time>/"),
    ]


def spot_flags(models) -> List[Flag]:
    return [
        Flag("--video", "one video file or frame folder", str),
        Flag("--data", "a long-video set (with --dataset)", str),
        Flag("--dataset", "annotation layout of --data (synthetic_long: `synth --long`)", str,
             "synthetic_long", choices=("samm_long", "casme2_long", "casme3_long", "synthetic_long")),
        Flag("--out", "output folder", str, required=True),
        *model_flags(models),
        Flag("--method", "the model's score, the MDMD-style optical-flow baseline, or both", str, "both",
             choices=("both", "model", "flow")),
        Flag("--fps", "--video: its frame rate", float, 30.0, "num>0"),
        Flag("--k", "pair distance in frames (default 0.15 s)", int, None, "int>=1"),
        Flag("--p", "threshold mean + p (max - mean) per video (default 0.3; --data also "
             "reports p fitted leave-one-subject-out)", float, None, "[0,1]"),
        Flag("--batch", "pairs per model batch", int, 64, "int>=1"),
        Flag("--flow-size", "face crop size of the flow baseline", int, 112, "int>=1"),
        Flag("--mp4", "--video: an MP4 of the map over the face"),
        Flag("--dali", "decode with NVIDIA DALI in sequences (on the GPU where CUDA is, frames "
             "staying there; else its CPU decoders: VP8/VP9/MJPEG only)"),
        Flag("--on-error", "unreadable video or sheet row: stop naming it, or skip and list it", str,
             "raise", choices=("raise", "skip")),
        overwrite_flag(),
    ]


def train_flags() -> List[Flag]:
    """pretrain's optimisation and loader flags: defaults of TrainConfig and pretrain_loader."""
    from ..data.loaders import pretrain_loader
    from ..train import TrainConfig
    t = lambda name: default(TrainConfig, name)  # noqa: E731
    ld = lambda name: default(pretrain_loader, name)  # noqa: E731
    return [
        Flag("--steps", "optimiser steps", int, t("steps"), "int>=1"),
        Flag("--batch", "batch size per process", int, ld("batch"), "int>=1"),
        Flag("--accum", "gradient accumulation micro-batches", int, t("accum"), "int>=1"),
        Flag("--lr", "peak learning rate", float, t("lr"), "float>0"),
        Flag("--min-lr", "final learning rate of the cosine", float, t("min_lr"), "float>=0"),
        Flag("--warmup", "warm-up steps", int, t("warmup"), "int>=0"),
        Flag("--weight-decay", "AdamW weight decay", float, t("weight_decay"), "float>=0"),
        Flag("--ema", "base momentum of the PoI EMA teacher", float, t("ema"), "[0,1]"),
        Flag("--delta", "frame distance range of the pairs", int, ld("delta"), "delta", nargs=2,
             metavar=("MIN", "MAX")),
        Flag("--samples-per-epoch", "pairs per epoch (default 8 per clip)", int, ld("samples_per_epoch"),
             "int>=1"),
        Flag("--ckpt-every", "checkpoint every this many steps", int, t("ckpt_every"), "int>=1"),
        Flag("--resume", "checkpoint to resume exactly from (its run's settings must match, see "
             "--allow-config-change)", str),
        Flag("--allow-config-change", "--resume although the model config or settings differ from the "
             "checkpoint's"),
        overwrite_flag(),
        Flag("--keep", "also keep OUT/step-<N>.pt of the last K checkpoints (default: last.pt only)", int,
             t("keep"), "int>=1"),
        Flag("--no-bf16", "deprecated: the same as --precision fp32"),
        Flag("--compile", "torch.compile the model"),
        Flag("--tensorboard", "also log to OUT/tb"),
        Flag("--seed", "seed of the samples and the model", int, ld("seed")),
        Flag("--on-error", "unreadable clip: stop with an error naming it, or skip and count it", str,
             ld("on_error"), choices=("raise", "skip")),
        Flag("--face-cache", "crop every clip to its face (OpenCV Haar), boxes cached in this folder", str,
             ld("face_cache")),
        Flag("--dali", "decode with NVIDIA DALI (GPU: nvJPEG/NVDEC; CPU: JPEG, VP8/9, MJPEG)"),
        Flag("--workers", "decoding threads of the loader (every mode; DALI: its CPU threads)", int,
             ld("workers"), "int>=1"),
        Flag("--prefetch", "batches prepared ahead in the background (0: none)", int, ld("prefetch"),
             "int>=0"),
    ]


def pretrain_flags(models) -> List[Flag]:
    return [
        Flag("--data", "folder of videos and/or frame folders", str, required=True),
        Flag("--out", "output folder (log.jsonl, last.pt, loss.png)", str, required=True),
        *model_flags(models, checkpoint="start from these weights",
                     model="named config (with --resume: the file's own config)"),
        Flag("--config", "JSON file of flag values (flags win)", str),
        *train_flags(),
        Flag("--no-memory-check", "skip the estimate of a step's memory against the free memory"),
    ]


def finetune_own_flags() -> List[Flag]:
    """The ``finetune`` command's own flags (beside evaluate's): defaults of FinetuneConfig."""
    from ..recognition.finetune import FinetuneConfig
    d = FinetuneConfig()
    return [
        Flag("--freeze", "the linear probe on frozen features (= evaluate)"),
        Flag("--epochs", "epochs per fold", int, d.epochs, "int>=1"),
        Flag("--batch", "batch size (a batch of 1 cannot train BatchNorm)", int, d.batch, "int>=2"),
        Flag("--lr", "peak learning rate (head, DMA, top of the encoder)", float, d.lr, "float>0"),
        Flag("--min-lr", "final learning rate of the cosine", float, d.min_lr, "float>=0"),
        Flag("--warmup-epochs", "linear warm-up", float, d.warmup_epochs, "float>=0"),
        Flag("--layer-decay", "learning rate x this per encoder block below the top", float, d.layer_decay,
             "(0,1]"),
        Flag("--weight-decay", "AdamW weight decay", float, d.weight_decay, "float>=0"),
        Flag("--flip", "probability of a horizontal flip of a pair (default 0.5; 0 for "
             "--dataset synthetic, whose classes are left/right mirror images)", float, None, "[0,1]"),
        Flag("--rotate", "max rotation of a pair, degrees", float, d.aug.rotate, "float>=0"),
        Flag("--crop-scale", "area fraction of the random square crop of a pair", float, d.aug.crop_scale,
             "(0,1]", nargs=2, metavar=("MIN", "MAX")),
        Flag("--jitter", "brightness/contrast/saturation jitter of a pair", float, d.aug.jitter, "float>=0"),
        Flag("--no-bf16", "deprecated: the same as --precision fp32"),
        Flag("--save-models", "write each fold's weights to OUT/fold_<subject>.pt"),
    ]


def slstt_flags() -> List[Flag]:
    """SLSTT's flags: the model of `finetune --model slstt_*`, and the `--baselines ...,slstt` row."""
    from ..slstt.flow import METHODS
    from ..slstt.model import AGGREGATORS
    return [
        Flag("--aggregator", "SLSTT's temporal aggregator (--model slstt_*, or the slstt baseline; "
             "default: the config's, lstm)", str, None, choices=AGGREGATORS),
        Flag("--flow", "SLSTT's optical flow from the onset to each frame (tvl1 needs "
             "opencv-contrib's cv2.optflow)", str, "farneback", choices=METHODS),
        Flag("--flow-cache", "SLSTT's flow fields cached in this folder (default OUT/flow_cache)", str),
    ]


def recognition_flags(models, name: str) -> List[Flag]:
    """evaluate's flags; finetune's adds its own before --on-error (and takes SLSTT's models)."""
    from ..slstt.model import SLSTT_CONFIGS
    slstt = ("named config (without --checkpoint); slstt_tiny, slstt_paper: SLSTT, a ViT on optical "
             "flow trained per fold from scratch (docs/slstt.md)")
    model = model_flags(models + sorted(SLSTT_CONFIGS), model=slstt) if name == "finetune" else model_flags(models)
    return [
        Flag("--data", "dataset root", str, required=True),
        Flag("--dataset", "annotation layout (synthetic: what `micronbert synth` writes; "
             "megc2019: the 3-class composite of CASME II, SAMM and SMIC, with "
             "--data casme2=DIR,samm=DIR,smic=DIR) "
             "(default: detected from the folder's sheet or folders)", str, None, choices=DATASETS),
        Flag("--class-map", "the classes: casme2_5 | megc2019_3 | casme3_7 | casme3_4 | casme3_3 | own "
             "(default: the dataset's own: casme2_5 for casme2, megc2019_3 for megc2019, the emotions "
             "as written otherwise)", str),
        Flag("--out", "output folder", str, required=True),
        *model,
        Flag("--head-epochs", "epochs of the linear head per fold (probe and feature baselines)", int, 300,
             "int>=1"),
        Flag("--baselines", "rows beside the model, comma-separated from pixel_difference, optical_flow, "
             "untrained, slstt (SLSTT trained per fold on the same folds; minutes on a CPU), "
             "default (the first three), none", str, "default"),
        Flag("--no-baselines", "no baselines (= --baselines none)"),
        Flag("--allow-untrained", "run without --checkpoint although the model row is then the "
             "untrained baseline again (refused otherwise)"),
        *slstt_flags(),
        Flag("--seed", "seed of the folds' training and the untrained model", int, 0),
        *(finetune_own_flags() if name == "finetune" else []),
        Flag("--on-error", "unreadable clip or sheet row: stop with an error naming it, or skip it", str,
             "raise", choices=("raise", "skip")),
        overwrite_flag(),
    ]


def visualize_flags(models) -> List[Flag]:
    return [
        *model_flags(models, checkpoint="weights (ours or the authors')"),
        Flag("--clip", "a video or frame folder (maps of every frame vs the first)", str),
        Flag("--frame-a", "earlier frame (image file or folder)", str),
        Flag("--frame-b", "later frame", str),
        Flag("--fps", "frame rate of the MP4 (a positive integer)", int, 10, "num>0"),
        Flag("--out", "output folder", str, required=True),
        overwrite_flag(),
    ]


FINETUNE_HELP = ("LOSO: encoder + DMA + head fine-tuned end to end per fold (torchrun: folds split "
                 "across ranks), beside baselines")
EVALUATE_HELP = ("LOSO linear probe: a linear head per fold on frozen encoder + DMA features, "
                 "beside baselines")

TOP_HELP = f"""start here: micronbert demo
  (synthesises micro-expressions of real faces, pre-trains the paper's μ-BERT for a few
  minutes on a CPU, scores it beside baselines; README.md says what it shows)

μ-BERT (Micron-BERT, CVPR 2023) with fused Triton kernels: pre-train, evaluate, fine-tune,
spot and visualize micro-expressions. `micronbert COMMAND -h`: the command's flags with
their defaults. --model default:
  {CPU_MODEL} on a CPU (the demo's), {CUDA_MODEL} (the paper's) on CUDA.

usage: micronbert [--debug] COMMAND [-h] [flags]"""

# command -> (its table, its help), in the order of `micronbert --help`
COMMANDS = {
    "demo": (demo_flags, "end-to-end demo on synthetic micro-expressions of real faces (CPU)"),
    "synth": (synth_flags, "write a synthetic micro-expression dataset (CASME II layout)"),
    "spot": (spot_flags, "spot micro/macro-expressions in long videos (MEGC protocol, with an "
                         "optical-flow baseline)"),
    "pretrain": (pretrain_flags, "pre-train (torchrun for several GPUs/processes)"),
    "evaluate": (lambda models: recognition_flags(models, "evaluate"), EVALUATE_HELP),
    "finetune": (lambda models: recognition_flags(models, "finetune"), FINETUNE_HELP),
    "visualize": (visualize_flags, "micro-motion maps of a frame pair, a clip or a video"),
}


# ------------------------------------------------------------------ the parser
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (required flags, None,
    off switches)."""

    def _get_help_string(self, action):
        d = action.default  # by identity: 0 and 0.0 (--seed, --min-lr) are defaults to show
        if action.required or d is None or d is False or d is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class TopHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """The top-level help: its description as written (line breaks kept)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block)."""

    def error(self, message):  # every command's errors: `micronbert: error: ...`
        self.exit(2, f"micronbert: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """(the ``micronbert`` parser, {command: its subparser}, {command: its flags})."""
    from ..config import CONFIGS
    models = sorted(CONFIGS)
    p = Parser(prog="micronbert", description=TOP_HELP, formatter_class=TopHelpFormatter,
               usage=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    tables = {}
    for name, (table, what) in COMMANDS.items():
        desc = {"description": what} if name in ("evaluate", "finetune") else {}
        sp = sub.add_parser(name, formatter_class=HelpFormatter, help=what, **desc)
        tables[name] = table(models)
        for flag in tables[name]:
            flag.add_to(sp)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,  # after the command too
                        help="show the traceback of an error")
    return p, sub.choices, tables
