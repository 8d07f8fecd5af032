"""The ``micronbert`` command: synth, pretrain, evaluate (finetune), visualize, demo."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


# ------------------------------------------------------------------ helpers
def _model_from(args):
    """The model of ``--checkpoint`` (ours or the authors', told apart by the file's content:
    an error in one of ours is reported, never hidden by trying the other format), or of
    ``--model`` and ``--overrides``."""
    from . import create_model
    from .checkpoint import load_model
    from .runs import UsageError
    backend = getattr(args, "backend", "auto")
    if getattr(args, "checkpoint", None):
        return load_model(args.checkpoint, backend=backend)
    try:
        overrides = json.loads(args.overrides) if getattr(args, "overrides", None) else {}
        if not isinstance(overrides, dict):
            raise ValueError("not a JSON object")
        return create_model(args.model, backend=backend, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {args.model} --overrides {getattr(args, 'overrides', None)!r}: "
                         f"{e}") from e


def _held_out_maps(model, table, masks_root):
    """Micro-motion maps of onset -> apex for the clips in ``table``, and their ROC-AUC
    against the ground-truth masks ``masks_root/<subject>/<clip>.png``."""
    from .maps import onset_apex_masks, roc_auc
    on, ap, truth = onset_apex_masks(table, masks_root, model.config.img_size)
    maps = model.eval().micro_motion_map(on, ap)  # uint8 frames: the model normalises them
    # control: the same map on a pair without motion (apex, apex) shows what position and
    # texture alone give against the same masks
    still = model.micro_motion_map(ap, ap)
    return on, ap, maps, truth, roc_auc(maps.numpy(), truth.numpy()), roc_auc(still.numpy(), truth.numpy())


def _add_model_flags(p, models, checkpoint="ours or the authors' checkpoint",
                     model="named config (without --checkpoint)"):
    """--checkpoint, --model, --overrides and --backend: which model a command runs."""
    p.add_argument("--checkpoint", default=None, help=checkpoint)
    p.add_argument("--model", default="micronbert_s8", choices=models, help=model)
    p.add_argument("--overrides", default=None, help="JSON of config overrides")
    _add_backend_flag(p)


def _add_backend_flag(p):
    p.add_argument("--backend", choices=("auto", "triton", "torch", "reference"), default="auto",
                   help="path of attention, DMA and the swap: auto = the fused Triton kernels on "
                        "CUDA, plain PyTorch on the CPU; reference = the readable spec; triton "
                        "fails with the reason where it cannot run")


def _add_train_flags(p):
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps")
    p.add_argument("--batch", type=int, default=64, help="batch size per process")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-batches")
    p.add_argument("--lr", type=float, default=1.5e-4, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=0.0, help="final learning rate of the cosine")
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--ema", type=float, default=0.996, help="base momentum of the PoI EMA teacher")
    p.add_argument("--delta", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"),
                   help="frame distance range of the pairs")
    p.add_argument("--samples-per-epoch", type=int, default=None, help="pairs per epoch (default 8 per clip)")
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every this many steps")
    p.add_argument("--resume", default=None, help="checkpoint to resume exactly from (its run's "
                                                  "settings must match, see --allow-config-change)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="--resume although the model config or settings differ from the checkpoint's")
    p.add_argument("--overwrite", action="store_true",
                   help="--out already holds a run: move its files aside to OUT/replaced-<time>/")
    p.add_argument("--keep", type=int, default=None,
                   help="also keep OUT/step-<N>.pt of the last K checkpoints (default: last.pt only)")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tb")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the model")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="unreadable clip: stop with an error naming it, or skip and count it")
    p.add_argument("--face-cache", default=None,
                   help="crop every clip to its face (OpenCV Haar), boxes cached in this folder")
    p.add_argument("--dali", action="store_true",
                   help="decode with NVIDIA DALI (GPU: nvJPEG/NVDEC; CPU: JPEG, VP8/9, MJPEG)")
    p.add_argument("--workers", type=int, default=2,
                   help="decoding threads of the loader (every mode; DALI: its CPU threads)")
    p.add_argument("--prefetch", type=int, default=2,
                   help="batches prepared ahead in the background (0: none)")


def cmd_synth(args):
    if args.nuisance is None:
        args.nuisance = "medium" if args.long else "none"
    if args.long:
        from .data.synthetic_long import write_synthetic_long
        write_synthetic_long(args.out, n_subjects=args.subjects, videos_per_subject=args.videos_per_subject,
                             seconds=args.seconds, fps=args.fps, size=args.size or 128,
                             nuisance=args.nuisance, seed=args.seed, video=args.video)
        print(f"[synth] wrote {args.out} (SAMM Long Videos layout, sheet "
              f"SAMM_LongVideos_synthetic.xlsx; spot it with --dataset synthetic_long)")
        return
    args.size = args.size or 64
    from .data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(args.out, n_subjects=args.subjects, clips_per_class=args.clips_per_class,
                            size=args.size, fps=args.fps, seed=args.seed, video=args.video,
                            nuisance=args.nuisance, benchmark=args.benchmark)
    print(f"[synth] wrote {args.out} (CASME II layout, sheet CASME2-coding-synthetic.xlsx, masks/"
          + (f", nuisance {args.nuisance}: nuisance.json" if args.nuisance != "none" else "") + ")")
    print(_next_commands(args.out, "sub01/EP01_01" + (".mp4" if args.video else "")))


def _next_commands(data, clip, run="runs/pt"):
    """The commands that follow `micronbert synth` (they run on a 2-core CPU as printed), with
    the command as it was called (``.venv/bin/micronbert`` stays so)."""
    mb = sys.argv[0] if os.path.basename(sys.argv[0]) == "micronbert" else "micronbert"
    return ("[synth] next: pre-train on it, evaluate (LOSO) and look at the maps:\n"
            f"  {mb} pretrain --data {data} --out {run} --model micronbert_tiny --batch 8 --steps 200\n"
            f"  {mb} evaluate --data {data} --checkpoint {run}/last.pt --out {run}/eval\n"
            f"  {mb} visualize --checkpoint {run}/last.pt --clip {os.path.join(data, clip)} "
            f"--out {run}/viz")


def cmd_spot(args):
    from .data.io import DataError
    try:
        return _spot(args)
    except DataError as e:  # a bad video or sheet row: one line naming it
        raise SystemExit(f"micronbert spot: {e}") from e
    except ImportError as e:  # --dali without DALI installed
        if not args.dali or "DALI" not in str(e):
            raise
        raise SystemExit(f"micronbert spot --dali: {e}") from e


def _spot(args):
    from .spot import SpotParams, format_table, spot_dataset, spot_one
    model = None
    if args.method != "flow":
        model = _model_from(args)
        if not args.checkpoint:
            print(f"[spot] no --checkpoint: {args.model} with untrained weights", file=sys.stderr)
    kw = {k: v for k, v in (("k", args.k), ("p", args.p)) if v is not None}
    if args.video:
        res = spot_one(args.video, args.out, model, fps=args.fps, method=args.method,
                       params=SpotParams(args.fps, **kw), batch=args.batch, flow_size=args.flow_size,
                       mp4=args.mp4, source="dali" if args.dali else "pyav")
        print(json.dumps({n: len(v) for n, v in res["intervals"].items()} |
                         {"frames_per_s": round(res["frames_per_s"], 1)}))
        print(f"[spot] wrote {args.out}: intervals.csv/json, scores.csv, score.png"
              + (", spot_map.mp4" if args.mp4 else ""))
        return res
    res = spot_dataset(args.dataset, args.data, args.out, model, method=args.method,
                       on_error=args.on_error, params_kw=kw, batch=args.batch, flow_size=args.flow_size,
                       source="dali" if args.dali else "pyav")
    print(format_table(res))
    print(f"[spot] wrote {args.out}: spot_results.json, spot_f1.png, videos/<video>/")
    return res


def cmd_pretrain(args):
    import torch

    from .data.pairs import pretrain_loader
    from .train import init_distributed, train
    rank, world = init_distributed()
    torch.manual_seed(args.seed)
    # resume: the run's own model, unless --model/--overrides are given (then compared)
    if args.resume and not args.checkpoint and not {"model", "overrides"} & getattr(args, "given", set()):
        from .checkpoint import load_checkpoint
        model = load_checkpoint(args.resume, backend=args.backend)[0]
        if rank == 0:
            print(f"[pretrain] resuming {args.resume}: its config (img {model.config.img_size}, "
                  f"width {model.config.embed_dim}, depth {model.config.depth})", file=sys.stderr)
    else:
        model = _model_from(args)
    if not args.no_memory_check:
        _check_memory(args, model, world)
    loader = pretrain_loader(args, model.config, rank, world)
    rec = train(model, loader, args.steps, args.out, lr=args.lr, min_lr=args.min_lr,
                warmup=args.warmup, weight_decay=args.weight_decay, accum=args.accum, ema=args.ema,
                ckpt_every=args.ckpt_every, resume=args.resume, bf16=not args.no_bf16,
                compile=args.compile, tensorboard=args.tensorboard, keep=args.keep,
                allow_config_change=args.allow_config_change)
    if rank == 0:
        _save_loss_curves(args.out)
        print(json.dumps({"steps": len(rec), "last": rec[-1] if rec else None,
                          "loader": loader.report | {"errors": loader.report["errors"][:5]},
                          "data_report": loader.data_report.as_dict()}))
    return rec


def _save_loss_curves(out):
    """OUT/loss.png from OUT/log.jsonl (every logged loss), when matplotlib is installed."""
    try:
        from .viz import read_log, save_curves
        save_curves(os.path.join(out, "loss.png"), read_log(os.path.join(out, "log.jsonl")))
    except ModuleNotFoundError as e:
        print(f"[pretrain] no loss.png: {e.name} is not installed", file=sys.stderr)


def _check_memory(args, model, world):
    """Refuse, before step 0, a pre-training step that cannot fit (micronbert/memory.py)."""
    import torch

    from .memory import available_bytes, check_fits
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    free, where = available_bytes(device)
    if free is not None and not cuda and world > 1:  # the processes of a CPU run share it
        free, where = free // world, f"{where} / {world} processes"
    name = None if args.resume or args.checkpoint or args.overrides else args.model
    try:
        check_fits(model, args.batch, device, elem_bytes=2 if cuda and not args.no_bf16 else 4,
                   model_name=name, available=free, where=where)
    except MemoryError as e:
        raise SystemExit(f"micronbert {e}")


def cmd_evaluate(args):
    from .evaluate import evaluate
    table = _annotation_table(args)  # first: a wrong folder fails before the model is built
    model = _model_from(args)
    res = evaluate(model, table, args.out, table.attrs["classes"], baselines=not args.no_baselines,
                   seed=args.seed, on_error=args.on_error, epochs=args.head_epochs)
    _print_loso(args, res)
    return res


def _print_loso(args, res):
    from .data.report import DataReport
    from .finetune import results_table
    print(results_table(res))
    print(f"[{args.cmd}] " + DataReport.from_dict(res["data_report"]).line())


def cmd_finetune(args):
    import torch

    from .finetune import run_finetune
    from .train import init_distributed
    init_distributed()  # torchrun: the folds are dealt to the ranks
    table = _annotation_table(args)  # first: a wrong folder fails before the model is built
    torch.manual_seed(args.seed)  # a named config without --checkpoint: the same init on every rank
    model = _model_from(args)
    res = run_finetune(args, model, table)
    if res is not None:
        _print_loso(args, res)
    return res


def _annotation_table(args):
    """The table of ``--data``: its layout detected when ``--dataset`` is not given; an error
    naming the layout the folder looks like when no clip keeps a class."""
    from .data.annotations import detect_dataset, load_annotations
    from .data.io import DataError
    if args.dataset is None:
        args.dataset = detect_dataset(args.data)
        print(f"[{args.cmd}] {args.data}: the {args.dataset} layout (--dataset to choose another)",
              file=sys.stderr)
    chosen = f"--dataset {args.dataset}" + (f" --class-map {args.class_map}" if args.class_map else "")
    try:
        table = load_annotations(args.dataset, args.data, args.class_map, args.on_error)
    except DataError as e:  # e.g. a class map that keeps no row: name the layout it looks like
        layout = _layout_or_none(args.data)
        if layout in ("(unknown)", args.dataset):
            raise
        raise SystemExit(f"micronbert {args.cmd}: {e}. With {chosen}; the folder looks like "
                         f"--dataset {layout}") from e
    if not len(table) or not table["label"].notna().any():
        emotions = sorted(set(table["emotion"])) if "emotion" in table else []
        raise SystemExit(f"micronbert {args.cmd}: no clip of {args.data} has a class under {chosen} "
                         f"(its emotions: {emotions}); the folder looks like --dataset "
                         f"{_layout_or_none(args.data)}, or pass --class-map own")
    return table


def _clip_mask(clip, size):
    """The motion mask of a clip of a `micronbert synth` folder (ROOT/masks/<subject>/<clip>.png
    beside ROOT/<subject>/<clip>), resized to ``size``: (bool (1, H, W) or None, its path)."""
    if not clip:
        return None, None
    import numpy as np
    import torch
    c = os.path.normpath(clip)
    subj_dir, name = os.path.split(c)
    root, subj = os.path.split(subj_dir)
    path = os.path.join(root, "masks", subj, os.path.splitext(name)[0] + ".png")
    if not os.path.isfile(path):
        return None, path
    from PIL import Image
    m = Image.open(path).convert("L").resize(size[::-1], Image.NEAREST)
    return torch.from_numpy(np.asarray(m) > 127)[None], path


def _layout_or_none(root):
    from .data.annotations import detect_dataset
    try:
        return detect_dataset(root)
    except Exception:
        return "(unknown)"


def _first_frame(path):
    """An image file, or the first frame of a frame folder or video: uint8 (H, W, 3)."""
    from .data.io import IMAGE_EXTS, read_frames, read_image
    if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS):
        return read_image(path)
    return read_frames(path, [0])[0]


def cmd_visualize(args):
    import numpy as np
    import torch

    from .data.io import read_frames, resize_u8
    from .viz import save_motion_maps
    model = _model_from(args).eval()
    size = model.config.img_size
    frames = read_frames(args.clip) if args.clip else np.stack(
        [_first_frame(args.frame_a), _first_frame(args.frame_b)])
    if len(frames) < 2:
        from .data.io import DataError
        raise DataError(f"{args.clip}: {len(frames)} frame; visualize needs a clip of at least 2 "
                        "frames (each frame's map is against the first)")
    x = resize_u8(torch.from_numpy(frames).permute(0, 3, 1, 2), size)
    ref = x[:1].expand(len(x) - 1, -1, -1, -1)
    maps = model.micro_motion_map(ref, x[1:])
    os.makedirs(args.out, exist_ok=True)
    k = min(len(maps), 8)
    idx = np.linspace(0, len(maps) - 1, k).round().astype(int)
    truth, mask_path = _clip_mask(args.clip, size)
    name = "/".join(os.path.normpath(args.clip).split(os.sep)[-2:]) if args.clip else \
        f"{os.path.basename(args.frame_a)} -> {os.path.basename(args.frame_b)}"
    save_motion_maps(
        os.path.join(args.out, "motion_maps.png"), ref[idx], x[1:][idx], maps[idx],
        None if truth is None else truth.expand(k, -1, -1),
        title=f"{args.checkpoint or args.model + ' (untrained)'}: {name}, "
              + (f"frame 1 vs frames {idx[0] + 2}..{idx[-1] + 2} of {len(x)}" if args.clip
                 else "frame a vs frame b"),
        row_labels=[f"frames 1 -> {i + 2}\n(d = {i + 1})" for i in idx],
        no_truth="no ground-truth mask" if args.clip is None else f"no mask at\n{mask_path}",
        truth_name="true motion (apex mask)")
    if args.clip and len(maps) > 1:
        from .data.io import write_video
        import matplotlib.cm as cm
        over = (0.5 * x[1:].permute(0, 2, 3, 1).float().numpy()
                + 0.5 * 255 * cm.jet(maps.numpy())[..., :3]).astype(np.uint8)
        write_video(over, os.path.join(args.out, "motion_maps.mp4"), fps=args.fps)
    print(f"[visualize] wrote {args.out}/motion_maps.png" + (" and motion_maps.mp4" if args.clip else ""))


def demo(args) -> dict:
    """Synthesise a micro-expression set from real faces (``--nuisance``: head motion, light,
    noise, blur, compression), pre-train a small μ-BERT (the paper's method,
    ``micronbert_tiny``, unless ``--model`` names a variant) on the CPU, and score its
    micro-motion maps (held-out subjects) and LOSO recognition beside the baselines
    (pixel difference, optical flow, the untrained model, a location prior): results.json,
    results.md, results.png. Nothing is tuned to pass: the table is what it measures."""
    import copy

    import torch

    from . import create_model
    from .data.annotations import load_annotations
    from .data.pairs import PairLoader
    from .data.pairs import find_clips
    from .data.synthetic import face_images, write_pretraining_corpus, write_synthetic_dataset
    from .evaluate import evaluate
    from .train import train
    from .viz import read_log, save_curves, save_motion_maps

    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = os.path.join(args.out, "data")
    nuisance = getattr(args, "nuisance", "none")
    print(f"[demo] 1/4 synthesising {args.subjects} subjects x {args.clips_per_class} clips per class, "
          f"nuisance {nuisance} -> {data}", flush=True)
    write_synthetic_dataset(data, n_subjects=args.subjects, clips_per_class=args.clips_per_class,
                            seed=args.seed, nuisance=nuisance)
    n_faces = len(face_images(64))
    extra = range(args.subjects, min(n_faces, args.subjects + args.corpus_faces))
    corpus_clips = []
    if len(extra):  # unlabeled clips of other faces, motion anywhere on the face
        corpus_clips = find_clips(write_pretraining_corpus(os.path.join(args.out, "corpus"), extra,
                                                           args.corpus_clips, seed=args.seed + 1,
                                                           nuisance=nuisance))
    table = load_annotations("synthetic", data)
    subjects = sorted(table.subject.unique())
    held = subjects[-args.held_out:]
    train_clips = sorted(table[~table.subject.isin(held)].path)
    train_clips += corpus_clips
    test_table = table[table.subject.isin(held)]
    overrides = json.loads(args.overrides or "{}")
    model = create_model(args.model, backend=args.backend, **overrides)
    untrained = copy.deepcopy(model)  # the same seed's model, scored beside the trained one
    print(f"[demo] 2/4 pre-training {args.model} for {args.steps} steps on {len(train_clips)} "
          f"unlabeled clips (held-out subjects excluded)", flush=True)
    loader = PairLoader(train_clips, 64, args.batch, 8, (1, 6), args.seed)
    records = train(model, loader, args.steps, os.path.join(args.out, "pretrain"), lr=args.lr,
                    warmup=max(1, args.steps // 20), ckpt_every=max(1, args.steps))
    print("[demo] 3/4 micro-motion maps of held-out subjects", flush=True)
    on, ap, maps, truth, auc1, auc_still = _held_out_maps(model, test_table, os.path.join(data, "masks"))
    k = min(6, len(on))
    from .evidence import loso_parts, write_comparison
    from .maps import amplitude_groups, location_prior, map_diagnostics, map_summary
    prior = location_prior(table[~table.subject.isin(held)], os.path.join(data, "masks"),
                           model.config.img_size)
    diagnostics = map_diagnostics(model, on, ap, truth, untrained=untrained, prior=prior,
                                  groups=amplitude_groups(test_table, data))
    summary = map_summary(diagnostics)
    save_motion_maps(os.path.join(args.out, "motion_maps.png"), on[:k], ap[:k], maps[:k], truth[:k],
                     title=f"held-out subjects, after {args.steps} steps: map ROC-AUC {auc1:.3f} "
                           f"(untrained {summary['untrained']:.3f}; pixel difference "
                           f"{summary['pixel_difference']:.3f}; no-motion control {auc_still:.3f})",
                     row_labels=[f"{r.subject} {r.clip}\n{r.emotion}\nframes {r.onset} -> {r.apex}"
                                 f"\n(d = {r.apex - r.onset})" for r in test_table[:k].itertuples()])
    save_curves(os.path.join(args.out, "loss.png"),
                read_log(os.path.join(args.out, "pretrain", "log.jsonl")),
                title=f"{args.model}: pre-training losses")
    print("[demo] maps beside their baselines (ROC-AUC on held-out clips; control = no motion):\n"
          + "\n".join(f"  {r['map']:<38} {r['roc_auc']:.3f}  control {r['control_no_motion']:.3f}"
                       for r in diagnostics), flush=True)
    print("[demo] 4/4 leave-one-subject-out recognition (model and baselines)", flush=True)
    res = evaluate(model, table, args.out, table.attrs["classes"], baselines=True, seed=args.seed)
    loso_model, loso_base = loso_parts(res)
    keep = ("accuracy", "uf1", "uar", "chance_uf1", "n_classes", "n_subjects")
    out = {"map_auc": auc1, "map_auc_untrained": summary["untrained"], "map_auc_no_motion_control": auc_still,
           "map_baselines": {k: v for k, v in summary.items() if k != "model"},
           "map_diagnostics": diagnostics,
           "loso": {**{k: loso_model[k] for k in keep if k in loso_model},
                    "baselines": {b: {k: m[k] for k in ("accuracy", "uf1", "uar") if k in m}
                                  for b, m in loso_base.items()}},
           "nuisance": nuisance,
           "pretrain": {"steps": args.steps, "batch": args.batch, "clips": len(train_clips),
                        "model": args.model, "overrides": overrides,
                        "extensions": model.config.extensions(),
                        "rec_loss_first10": sum(r["rec_loss"] for r in records[:10]) / max(1, len(records[:10])),
                        "rec_loss_last10": sum(r["rec_loss"] for r in records[-10:]) / max(1, len(records[-10:]))},
           "seconds": round(time.time() - t_start, 1)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    table_md = write_comparison(args.out, out, f"{args.model}, {args.steps} steps, nuisance {nuisance}, "
                                               f"seed {args.seed}")
    print(json.dumps({k: v for k, v in out.items() if k != "map_diagnostics"}, indent=2))
    print(f"[demo] the model beside its baselines (nuisance {nuisance}):\n{table_md}")
    print(f"[demo] wrote {args.out}: results.json, results.md, results.png, motion_maps.png, "
          f"confusion.png, loss.png, loso.json, folds.csv, pretrain/last.pt")
    return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (required flags, None,
    off switches)."""

    def _get_help_string(self, action):
        if action.required or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def main(argv=None):
    from .config import CONFIGS
    fmt = _HelpFormatter
    p = _Parser(prog="micronbert", description="μ-BERT with fused kernels", formatter_class=fmt)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    models = sorted(CONFIGS)
    datasets = ("casme2", "samm", "smic", "casme3", "megc2019", "synthetic")

    d = sub.add_parser("demo", formatter_class=fmt, help="end-to-end demo on synthetic micro-expressions of real faces (CPU)")
    d.add_argument("--out", default="runs/demo", help="output folder")
    d.add_argument("--steps", type=int, default=600, help="pre-training steps")
    d.add_argument("--batch", type=int, default=32, help="batch size")
    d.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    d.add_argument("--subjects", type=int, default=8, help="synthetic subjects (faces)")
    d.add_argument("--clips-per-class", type=int, default=3, help="clips per class and subject")
    d.add_argument("--held-out", type=int, default=2, help="subjects held out of pre-training")
    d.add_argument("--corpus-faces", type=int, default=48,
                   help="other faces whose unlabeled clips (motion anywhere) join pre-training")
    d.add_argument("--corpus-clips", type=int, default=8, help="unlabeled clips per corpus face")
    d.add_argument("--model", default="micronbert_tiny", choices=models,
                   help="named config: micronbert_tiny (the paper's method) or our variant "
                        "micronbert_tiny_nullkey")
    d.add_argument("--overrides", default=None, help="JSON of model config overrides, e.g. {\"lambda_diag\": 1.0}")
    d.add_argument("--nuisance", choices=("none", "low", "medium", "high"), default="medium",
                   help="nuisance of the synthetic clips (synth --nuisance): head motion, light, "
                        "noise, blur, JPEG; none: the clean set a subtraction wins")
    _add_backend_flag(d)
    d.add_argument("--seed", type=int, default=0, help="seed of everything")

    s = sub.add_parser("synth", formatter_class=fmt, help="write a synthetic micro-expression dataset (CASME II layout)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--subjects", type=int, default=8, help="subjects (faces, at most 101)")
    s.add_argument("--clips-per-class", type=int, default=3, help="clips per class and subject")
    s.add_argument("--size", type=int, default=None, help="frame size in pixels (64; --long: 128)")
    s.add_argument("--fps", type=int, default=30, help="frame rate (the expression lasts <= 0.5 s)")
    s.add_argument("--video", action="store_true", help="write H.264 videos instead of JPEG folders")
    s.add_argument("--nuisance", choices=("none", "low", "medium", "high"), default=None,
                   help="head motion, light, blur, noise and compression (JPEG quality; H.264 CRF "
                        "with --video), amplitudes 0.5-3 px and a no_motion class "
                        "(micronbert.data.synthetic.NUISANCE); none: the clean set. With --long: "
                        "head drift, blinks, illumination, noise, compression "
                        "(micronbert.data.synthetic_long.NUISANCE). Default: none; --long: medium")
    s.add_argument("--seed", type=int, default=0, help="seed")
    s.add_argument("--benchmark", choices=("motion", "regions"), default="motion",
                   help="motion: classes are the kind and direction of the motion at a place drawn per "
                        "clip (micronbert.data.synthetic_motion); regions: one fixed region per class, the "
                        "set of earlier versions (place answers). Not with --long")
    s.add_argument("--long", action="store_true",
                   help="long videos for spotting (SAMM Long Videos layout and sheet) with nuisance "
                        "and micro/macro-expressions at known frames")
    s.add_argument("--seconds", type=float, default=30.0, help="--long: seconds per video")
    s.add_argument("--videos-per-subject", type=int, default=2, help="--long: videos per subject")

    sp = sub.add_parser("spot", formatter_class=fmt,
                        help="spot micro/macro-expressions in long videos (MEGC protocol, with an "
                             "optical-flow baseline)")
    sp.add_argument("--video", default=None, help="one video file or frame folder")
    sp.add_argument("--data", default=None, help="a long-video set (with --dataset)")
    sp.add_argument("--dataset", default="synthetic_long",
                    choices=("samm_long", "casme2_long", "casme3_long", "synthetic_long"),
                    help="annotation layout of --data (synthetic_long: `synth --long`)")
    sp.add_argument("--out", required=True, help="output folder")
    _add_model_flags(sp, models)
    sp.add_argument("--method", default="both", choices=("both", "model", "flow"),
                    help="the model's score, the MDMD-style optical-flow baseline, or both")
    sp.add_argument("--fps", type=float, default=30.0, help="--video: its frame rate")
    sp.add_argument("--k", type=int, default=None, help="pair distance in frames (default 0.15 s)")
    sp.add_argument("--p", type=float, default=None,
                    help="threshold mean + p (max - mean) per video (default 0.3; --data also "
                         "reports p fitted leave-one-subject-out)")
    sp.add_argument("--batch", type=int, default=64, help="pairs per model batch")
    sp.add_argument("--flow-size", type=int, default=112, help="face crop size of the flow baseline")
    sp.add_argument("--mp4", action="store_true", help="--video: an MP4 of the map over the face")
    sp.add_argument("--dali", action="store_true",
                    help="decode with NVIDIA DALI in sequences (on the GPU where CUDA is, frames "
                         "staying there; else its CPU decoders: VP8/VP9/MJPEG only)")
    sp.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                    help="unreadable video or sheet row: stop naming it, or skip and list it")

    t = sub.add_parser("pretrain", formatter_class=fmt, help="pre-train (torchrun for several GPUs/processes)")
    t.add_argument("--data", required=True, help="folder of videos and/or frame folders")
    t.add_argument("--out", required=True, help="output folder (log.jsonl, last.pt, loss.png)")
    _add_model_flags(t, models, checkpoint="start from these weights",
                     model="named config (with --resume: the file's own config)")
    t.add_argument("--config", default=None, help="JSON file of flag values (flags win)")
    _add_train_flags(t)
    t.add_argument("--no-memory-check", action="store_true",
                   help="skip the estimate of a step's memory against the free memory")

    for name in ("evaluate", "finetune"):
        what = ("LOSO: encoder + DMA + head fine-tuned end to end per fold (torchrun: folds split "
                "across ranks), beside baselines" if name == "finetune" else
                "LOSO linear probe: a linear head per fold on frozen encoder + DMA features, "
                "beside baselines")
        e = sub.add_parser(name, formatter_class=fmt, help=what, description=what)
        e.add_argument("--data", required=True, help="dataset root")
        e.add_argument("--dataset", default=None, choices=datasets,
                       help="annotation layout (synthetic: what `micronbert synth` writes; "
                            "megc2019: the 3-class composite of CASME II, SAMM and SMIC, with "
                            "--data casme2=DIR,samm=DIR,smic=DIR) "
                            "(default: detected from the folder's sheet or folders)")
        e.add_argument("--class-map", default=None, help="casme2_5 | megc2019_3 | own ...")
        e.add_argument("--out", required=True, help="output folder")
        _add_model_flags(e, models)
        e.add_argument("--head-epochs", type=int, default=300,
                       help="epochs of the linear head per fold (probe and feature baselines)")
        e.add_argument("--no-baselines", action="store_true",
                       help="skip the pixel difference, optical flow and untrained-model baselines")
        e.add_argument("--seed", type=int, default=0, help="seed of the folds' training and the untrained model")
        if name == "finetune":
            from .finetune import add_finetune_flags
            add_finetune_flags(e)
        e.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                       help="unreadable clip or sheet row: stop with an error naming it, or skip it")

    v = sub.add_parser("visualize", formatter_class=fmt, help="micro-motion maps of a frame pair, a clip or a video")
    _add_model_flags(v, models, checkpoint="weights (ours or the authors')")
    v.add_argument("--clip", default=None, help="a video or frame folder (maps of every frame vs the first)")
    v.add_argument("--frame-a", default=None, help="earlier frame (image file or folder)")
    v.add_argument("--frame-b", default=None, help="later frame")
    v.add_argument("--fps", type=int, default=10, help="frame rate of the MP4 (a positive integer)")
    v.add_argument("--out", required=True, help="output folder")

    from . import runs
    argv = list(sys.argv[1:] if argv is None else argv)
    for sp in sub.choices.values():  # --debug after the command too
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    args = p.parse_args(argv)
    if args.cmd is None:  # no command: the command list
        p.print_help()
        return 0
    try:
        runs.apply_config_file(sub.choices[args.cmd], args, argv[argv.index(args.cmd) + 1:])
        runs.check_flags(args)
        if getattr(args, "warmup", 0) > getattr(args, "steps", 1 << 60):  # cosine_lr caps it
            print(f"[{args.cmd}] --warmup {args.warmup} is longer than --steps {args.steps}: "
                  f"capped at {args.steps}", file=sys.stderr)
        if args.cmd == "spot" and bool(args.video) == bool(args.data):
            raise runs.UsageError("spot needs --video V, or --data DIR with --dataset")
        if args.cmd == "visualize" and not args.clip and not (args.frame_a and args.frame_b):
            raise runs.UsageError("visualize needs --clip, or --frame-a and --frame-b")
        runs.check_writable(args.out)  # every command has --out: fail now, not after the work
        run = {"demo": demo, "synth": cmd_synth, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate,
               "finetune": cmd_finetune, "visualize": cmd_visualize, "spot": cmd_spot}[args.cmd]
        with runs.run_folder(args):  # pretrain: the lock, overwrite protection, stale files
            run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("micronbert: interrupted", file=sys.stderr)
        raise SystemExit(130)
    except Exception as e:  # one line; --debug: the traceback
        if args.debug:
            raise
        print(f"micronbert: error: {runs.error_line(e, _EXTRAS)}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, runs.UsageError) else 1)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# modules of the optional extras (setup.py) -> the extra that installs them
_EXTRAS = {"av": "cli", "cv2": "cli", "pandas": "cli", "openpyxl": "cli", "PIL": "cli",
           "skimage": "cli", "scipy": "cli", "tqdm": "cli", "matplotlib": "cli", "nvidia": "dali",
           "tensorboard": "tensorboard"}


if __name__ == "__main__":
    sys.exit(main())
