"""The ``micronbert`` commands (but ``demo``): synth, spot, pretrain, evaluate, finetune,
visualize, each from its parsed flags."""
from __future__ import annotations

import json
import os
import sys


# ------------------------------------------------------------------ helpers
def model_from(args):
    """The model of ``--checkpoint`` (ours or the authors', told apart by the file's content:
    an error in one of ours is reported, never hidden by trying the other format), or of
    ``--model`` and ``--overrides``."""
    from ..model import create_model
    from ..checkpoint import load_model
    from ..runs import UsageError
    backend = getattr(args, "backend", "auto")
    if getattr(args, "checkpoint", None):
        return load_model(args.checkpoint, backend=backend)
    if getattr(args, "cmd", None) in UNTRAINED_WARNED:
        print(f"[{args.cmd}] {untrained_note(args)}", file=sys.stderr, flush=True)
    try:
        overrides = json.loads(args.overrides) if getattr(args, "overrides", None) else {}
        if not isinstance(overrides, dict):
            raise ValueError("not a JSON object")
        return create_model(args.model, backend=backend, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--model {args.model} --overrides {getattr(args, 'overrides', None)!r}: "
                         f"{e}") from e


# the commands that run a model for its results: without --checkpoint they say, on stderr and
# in their result files, that its weights are untrained
UNTRAINED_WARNED = ("spot", "evaluate", "finetune", "visualize")


def untrained_note(args) -> str:
    return (f"WARNING: no --checkpoint: {args.model} with UNTRAINED (random) weights; its results say "
            f"nothing of a trained model (pretrain, then --checkpoint OUT/last.pt)")


def mark_untrained(args, *names) -> None:
    """Write the untrained-weights warning into the result files ``names`` of ``args.out``
    (JSON: the key "weights", after the verdict; Markdown: a line after the verdict), when the
    model had no checkpoint."""
    if getattr(args, "checkpoint", None) or getattr(args, "method", None) == "flow":
        return
    from ..runs import atomic_output
    for name in names:
        path = os.path.join(args.out, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            text = f.read()
        if name.endswith(".json"):  # after the verdict and chance, which open every result file
            d = json.loads(text)
            lead = {k: d.pop(k) for k in ("verdict", "chance") if k in d}
            text = json.dumps({**lead, "weights": untrained_note(args), **d}, indent=2)
        else:
            lines = text.split("\n")
            at = next((i + 1 for i, x in enumerate(lines) if x.startswith("**Does it work?**")), 0)
            text = "\n".join(lines[:at] + [f"**{untrained_note(args)}**", ""] + lines[at:])
        with atomic_output(path) as tmp, open(tmp, "w") as f:  # a kill here leaves the file whole
            f.write(text)


def refuse_double_untrained(args) -> None:
    """evaluate/finetune without --checkpoint: the "model" row would be the untrained baseline
    a second time; refused unless --allow-untrained (or no untrained row: --baselines without it)."""
    from ..runs import UsageError
    if args.checkpoint or args.allow_untrained or args.model.startswith("slstt") \
            or "untrained" not in baselines_from(args):
        return
    raise UsageError(f"{args.cmd} without --checkpoint would score the untrained {args.model} as the "
                     f"model, the same as its 'untrained' baseline row: pass --checkpoint (e.g. "
                     f"runs/pt/last.pt from pretrain), or --allow-untrained to run it anyway")


def cmd_synth(args):
    if args.nuisance is None:
        args.nuisance = "medium" if args.long else "none"
    if args.long:
        from ..data.synthetic_long import write_synthetic_long
        write_synthetic_long(args.out, n_subjects=args.subjects, videos_per_subject=args.videos_per_subject,
                             seconds=args.seconds, fps=args.fps, size=args.size or 128,
                             nuisance=args.nuisance, seed=args.seed, video=args.video)
        print(f"[synth] wrote {args.out} (SAMM Long Videos layout, sheet "
              f"SAMM_LongVideos_synthetic.xlsx; spot it with --dataset synthetic_long)")
        return
    args.size = args.size or 64
    from ..data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(args.out, n_subjects=args.subjects, clips_per_class=args.clips_per_class,
                            size=args.size, fps=args.fps, seed=args.seed, video=args.video,
                            nuisance=args.nuisance, benchmark=args.benchmark)
    print(f"[synth] wrote {args.out} (CASME II layout, sheet CASME2-coding-synthetic.xlsx, masks/"
          + (f", nuisance {args.nuisance}: nuisance.json" if args.nuisance != "none" else "") + ")")
    print(_next_commands(args.out, "sub01/EP01_01" + (".mp4" if args.video else "")))


def _next_commands(data, clip, run="runs/pt"):
    """The commands that follow `micronbert synth` (they run on a 2-core CPU as printed), with
    the command as it was called (``.venv/bin/micronbert`` stays so)."""
    mb = _invoked_as()
    return ("[synth] next: pre-train on it, evaluate (LOSO) and look at the maps:\n"
            f"  {mb} pretrain --data {data} --out {run} --model micronbert_tiny --batch 8 --steps 200\n"
            f"  {mb} evaluate --data {data} --checkpoint {run}/last.pt --out {run}/eval\n"
            f"  {mb} visualize --checkpoint {run}/last.pt --clip {os.path.join(data, clip)} "
            f"--out {run}/viz")


def _invoked_as() -> str:
    """The command as it was called (``.venv/bin/micronbert`` stays so)."""
    return sys.argv[0] if os.path.basename(sys.argv[0]) == "micronbert" else "micronbert"


def cmd_spot(args):
    """``micronbert spot``; its errors (a bad video or sheet row, --dali without DALI) are
    main's one line ``micronbert: error: ...``."""
    from ..spot import SpotParams, format_table, spot_dataset, spot_one
    model = None
    if args.method != "flow":
        model = model_from(args)
    kw = {k: v for k, v in (("k", args.k), ("p", args.p)) if v is not None}
    if args.video:
        res = spot_one(args.video, args.out, model, fps=args.fps, method=args.method,
                       params=SpotParams(args.fps, **kw), batch=args.batch, flow_size=args.flow_size,
                       mp4=args.mp4, source="dali" if args.dali else "pyav", precision=args.precision)
        found = ", ".join(f"{n} {len(v)}" for n, v in res["intervals"].items())
        print(f"[spot] intervals found: {found}; {res['frames_per_s']:.1f} frames/s")
        mark_untrained(args, "intervals.json")
        print(f"[spot] wrote {args.out}: intervals.csv/json, scores.csv, score.png"
              + (", spot_map.mp4" if args.mp4 else ""))
        return res
    res = spot_dataset(args.dataset, args.data, args.out, model, method=args.method,
                       on_error=args.on_error, params_kw=kw, batch=args.batch, flow_size=args.flow_size,
                       source="dali" if args.dali else "pyav", precision=args.precision)
    mark_untrained(args, "spot_results.json")
    print(format_table(res))
    print(f"[spot] verdict: {res['verdict']}")
    print(f"[spot] wrote {args.out}: spot_results.md/json, spot_f1.png, videos/<video>/")
    return res


def asked_precision(args) -> str:
    """--precision, or fp32 where the deprecated --no-bf16 is given."""
    return "fp32" if getattr(args, "no_bf16", False) else args.precision


def cmd_pretrain(args):
    import torch

    from ..data.loaders import pretrain_loader
    from ..data.pairs import KEEP_ERRORS, find_clips
    from ..data.report import DataReport
    from ..train import init_distributed, train
    rank, world = init_distributed()
    torch.manual_seed(args.seed)
    # resume: the run's own model, unless --model/--overrides are given (then compared)
    if args.resume and not args.checkpoint and not {"model", "overrides"} & getattr(args, "given", set()):
        from ..checkpoint import load_checkpoint
        model = load_checkpoint(args.resume, backend=args.backend)[0]
        if rank == 0:
            print(f"[pretrain] resuming {args.resume}: its config (img {model.config.img_size}, "
                  f"width {model.config.embed_dim}, depth {model.config.depth})", file=sys.stderr)
    else:
        model = model_from(args)
    if not args.no_memory_check:
        _check_memory(args, model, world)
    outside = DataReport(KEEP_ERRORS)  # symlinks leading out of --data: skipped, counted
    loader = pretrain_loader(find_clips(args.data, outside), model.config, rank=rank, world=world,
                             **loader_flags(args))
    loader.data_report.merge(outside)
    rec = train(model, loader, args.steps, args.out, lr=args.lr, min_lr=args.min_lr,
                warmup=args.warmup, weight_decay=args.weight_decay, accum=args.accum, ema=args.ema,
                ckpt_every=args.ckpt_every, resume=args.resume, precision=asked_precision(args),
                compile=args.compile, tensorboard=args.tensorboard, keep=args.keep,
                allow_config_change=args.allow_config_change)
    if rank == 0:
        _save_loss_curves(args.out)
        _pretrain_summary(args, rec, loader)
    return rec


def _pretrain_summary(args, rec, loader):
    """OUT/summary.json (the last step, the loader's and the data's reports); a few lines on
    stdout, ending with the commands that follow."""
    summary = {"steps": len(rec), "last": rec[-1] if rec else None,
               "loader": loader.report | {"errors": loader.report["errors"][:5]},
               "data_report": loader.data_report.as_dict()}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    last = rec[-1] if rec else {}
    losses = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.endswith("loss"))
    print(f"[pretrain] {len(rec)} steps run" + (f", step {last.get('step')}: {losses}" if last else ""))
    print("[pretrain] " + loader.data_report.line())
    print(f"[pretrain] wrote {args.out}: last.pt, log.jsonl, loss.png, summary.json")
    ck = os.path.join(args.out, "last.pt")
    mb = _invoked_as()
    print(f"[pretrain] next: evaluate it (LOSO, beside baselines) and look at its maps:\n"
          f"  {mb} evaluate --data {args.data} --checkpoint {ck} --out {os.path.join(args.out, 'eval')}\n"
          f"  {mb} visualize --checkpoint {ck} --clip CLIP_OR_VIDEO --out {os.path.join(args.out, 'viz')}")


# the flags of `pretrain` that are pretrain_loader's settings
LOADER_FLAGS = ("batch", "delta", "seed", "samples_per_epoch", "on_error", "face_cache", "dali", "workers",
                "prefetch")


def loader_flags(args) -> dict:
    """pretrain_loader's settings from the parsed ``pretrain`` flags."""
    return {k: getattr(args, k) for k in LOADER_FLAGS}


def _save_loss_curves(out):
    """OUT/loss.png from OUT/log.jsonl (every logged loss), when matplotlib is installed."""
    try:
        from ..viz import read_log, save_curves
        save_curves(os.path.join(out, "loss.png"), read_log(os.path.join(out, "log.jsonl")))
    except ModuleNotFoundError as e:
        print(f"[pretrain] no loss.png: {e.name} is not installed", file=sys.stderr)


def _check_memory(args, model, world):
    """Refuse, before step 0, a pre-training step that cannot fit (micronbert/memory.py)."""
    import torch

    from ..kernels.backend import resolve_precision
    from ..memory import activation_elem_bytes, available_bytes, check_fits
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    free, where = available_bytes(device)
    if free is not None and not cuda and world > 1:  # the processes of a CPU run share it
        free, where = free // world, f"{where} / {world} processes"
    name = None if args.resume or args.checkpoint or args.overrides else args.model
    try:
        check_fits(model, args.batch, device,
                   elem_bytes=activation_elem_bytes(device, resolve_precision(asked_precision(args), device)),
                   model_name=name, available=free, where=where)
    except MemoryError as e:
        from ..runs import UsageError
        raise UsageError(str(e)) from e


def cmd_evaluate(args):
    from ..recognition.probe import evaluate
    refuse_double_untrained(args)
    table = _annotation_table(args)  # first: a wrong folder fails before the model is built
    model = model_from(args)
    res = evaluate(model, table, args.out, table.attrs["classes"], baselines=baselines_from(args),
                   seed=args.seed, on_error=args.on_error, epochs=args.head_epochs, **_slstt_row(args),
                   slstt_cfg=_slstt_cfg(args), precision=asked_precision(args))
    _print_loso(args, res)
    return res


def baselines_from(args) -> frozenset:
    """The rows of ``--baselines`` (none with ``--no-baselines``); an unknown name is a UsageError."""
    from ..recognition.report import baseline_set
    from ..runs import UsageError
    try:
        names = baseline_set(getattr(args, "baselines", "default"))
    except ValueError as e:
        raise UsageError(f"--baselines {args.baselines!r}: {e}") from e
    names = frozenset() if getattr(args, "no_baselines", False) else names
    if "slstt" in names:
        from ..slstt.cli import check_flow
        check_flow(args)
    return names


def _slstt_row(args) -> dict:
    """evaluate's/finetune's options of the "slstt" row (``--aggregator``, ``--flow``, ...)."""
    from ..slstt.cli import baseline_options
    return {"slstt": baseline_options(args)}


def _slstt_cfg(args):
    """evaluate's "slstt" row is trained with finetune's defaults (no flip on --dataset synthetic)."""
    from ..augment import PairAugment
    from ..recognition.finetune import FinetuneConfig
    return FinetuneConfig(seed=args.seed, aug=PairAugment(flip=0.0 if args.dataset == "synthetic" else 0.5))


def _print_loso(args, res):
    from ..data.report import DataReport
    from ..recognition.report import results_table
    mark_untrained(args, "loso.json", "loso.md")
    print(results_table(res))
    print(f"[{args.cmd}] " + DataReport.from_dict(res["data_report"]).line())


def cmd_finetune(args):
    import torch

    from ..slstt.cli import check_slstt_args, is_slstt, run_slstt
    from ..train import init_distributed
    refuse_double_untrained(args)
    init_distributed()  # torchrun: the folds are dealt to the ranks
    baselines = baselines_from(args)
    if is_slstt(args.model):
        check_slstt_args(args)
    table = _annotation_table(args)  # first: a wrong folder fails before the model is built
    torch.manual_seed(args.seed)  # a named config without --checkpoint: the same init on every rank
    if is_slstt(args.model):
        res = run_slstt(args, table, _augment(args), baselines)
    else:
        res = run_finetune(args, model_from(args), table, baselines)
    if res is not None:
        _print_loso(args, res)
    return res


def _augment(args):
    """finetune's PairAugment from its flags (no flip by default on --dataset synthetic)."""
    from ..augment import PairAugment
    flip = args.flip if args.flip is not None else (0.0 if args.dataset == "synthetic" else 0.5)
    return PairAugment(crop_scale=tuple(args.crop_scale), rotate=args.rotate, flip=flip, jitter=args.jitter)


def run_finetune(args, model, table, baselines=None):
    """``micronbert finetune`` from its parsed flags (``baselines``: default ``--baselines``')."""
    from ..recognition.finetune import finetune
    baselines = baselines_from(args) if baselines is None else baselines
    return finetune(model, table, args.out, table.attrs["classes"], baselines=baselines,
                    freeze=args.freeze, head_epochs=args.head_epochs, save_models=args.save_models,
                    on_error=args.on_error, aug=_augment(args), **_slstt_row(args),
                    epochs=args.epochs, batch=args.batch, lr=args.lr, min_lr=args.min_lr,
                    warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay,
                    weight_decay=args.weight_decay, precision=asked_precision(args), seed=args.seed)


def _annotation_table(args):
    """The table of ``--data``: its layout detected when ``--dataset`` is not given; an error
    naming the layout the folder looks like when no clip keeps a class."""
    from ..data.annotations import detect_dataset, load_annotations
    from ..data.io import DataError
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
        raise DataError(f"{e}. With {chosen}; the folder looks like --dataset {layout}") from e
    if not len(table) or not table["label"].notna().any():
        emotions = sorted(set(table["emotion"])) if "emotion" in table else []
        raise DataError(f"no clip of {args.data} has a class under {chosen} (its emotions: "
                        f"{emotions}); the folder looks like --dataset {_layout_or_none(args.data)}, "
                        f"or pass --class-map own")
    return table


def _clip_mask(clip, box, size):
    """The motion mask of a clip of a `micronbert synth` folder (ROOT/masks/<subject>/<clip>.png
    beside ROOT/<subject>/<clip>), cropped to the face ``box`` like the frames and resized to
    ``size``: bool (1, H, W), or None when the clip has no mask."""
    if not clip:
        return None
    import numpy as np
    import torch
    c = os.path.normpath(clip)
    subj_dir, name = os.path.split(c)
    root, subj = os.path.split(subj_dir)
    path = os.path.join(root, "masks", subj, os.path.splitext(name)[0] + ".png")
    if not os.path.isfile(path):
        return None
    from PIL import Image
    x0, y0, x1, y1 = box
    m = Image.open(path).convert("L").crop((x0, y0, x1, y1)).resize(size[::-1], Image.NEAREST)
    return torch.from_numpy(np.asarray(m) > 127)[None]


def _layout_or_none(root):
    from ..data.annotations import detect_dataset
    try:
        return detect_dataset(root)
    except Exception:
        return "(unknown)"


def _first_frame(path):
    """An image file, or the first frame of a frame folder or video: uint8 (H, W, 3)."""
    from ..data.io import IMAGE_EXTS, read_frames, read_image
    if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS):
        return read_image(path)
    return read_frames(path, [0])[0]


def _check_clip_fits(clip):
    """Refuse, before decoding, a clip whose frames cannot fit in memory (all of them decoded,
    then resized): a DataError naming it."""
    from ..data.io import DataError, count_frames
    from ..memory import RUNTIME_BYTES, check_bytes
    h, w = _first_frame(clip).shape[:2]
    n = count_frames(clip)
    try:
        check_bytes(RUNTIME_BYTES + n * h * w * 3 * 2, f"{n} frames of {w}x{h}",
                    "visualize a shorter clip or downscale it")
    except MemoryError as e:
        raise DataError(f"{clip}: {e}") from e


def cmd_visualize(args):
    import numpy as np
    import torch

    from ..data.io import read_frames, resize_u8
    from ..kernels.backend import precision
    from ..viz import save_motion_maps
    model = model_from(args).eval()  # first: a bad checkpoint is the error a user sees first
    if args.clip:
        _check_clip_fits(args.clip)  # before decoding
    size = model.config.img_size
    frames = read_frames(args.clip) if args.clip else np.stack(
        [_first_frame(args.frame_a), _first_frame(args.frame_b)])
    if len(frames) < 2:
        from ..data.io import DataError
        raise DataError(f"{args.clip}: {len(frames)} frame; visualize needs a clip of at least 2 "
                        "frames (each frame's map is against the first)")
    from ..spot.frames import chunk_box
    raw = torch.from_numpy(np.ascontiguousarray(frames))
    box, found = chunk_box(raw, None, args.clip or args.frame_a)  # the face, as spot crops it
    x0, y0, x1, y1 = box
    x = resize_u8(raw[:, y0:y1, x0:x1].permute(0, 3, 1, 2).contiguous(), size)
    ref = x[:1].expand(len(x) - 1, -1, -1, -1)
    with torch.no_grad(), precision("cpu", args.precision):  # each frame encoded once
        xs = model.backbone(model.patchify(x))
        maps = model.map_of(model.dma_between(xs[:1].expand(len(x) - 1, -1, -1), xs[1:])[1]).float()
    os.makedirs(args.out, exist_ok=True)
    k = min(len(maps), 8)
    idx = np.linspace(0, len(maps) - 1, k).round().astype(int)
    truth = _clip_mask(args.clip, box, size)
    name = "/".join(os.path.normpath(args.clip).split(os.sep)[-2:]) if args.clip else \
        f"{os.path.basename(args.frame_a)} -> {os.path.basename(args.frame_b)}"
    save_motion_maps(
        os.path.join(args.out, "motion_maps.png"), ref[idx], x[1:][idx], maps[idx],
        None if truth is None else truth.expand(k, -1, -1),
        title=f"{args.checkpoint or args.model + ' (untrained)'}: {name}, "
              + (f"frame 1 vs frames {idx[0] + 2}..{idx[-1] + 2} of {len(x)}" if args.clip
                 else "frame a vs frame b")
              + ("" if found else " (no face found: the centred square)"),
        row_labels=[f"frames 1 -> {i + 2}\n(d = {i + 1})" for i in idx],
        no_truth=None, truth_name="true motion (apex mask)")
    if args.clip and len(maps) > 1:
        from ..data.io import write_video
        import matplotlib.cm as cm
        over = (0.5 * x[1:].permute(0, 2, 3, 1).float().numpy()
                + 0.5 * 255 * cm.jet(maps.numpy())[..., :3]).astype(np.uint8)
        write_video(over, os.path.join(args.out, "motion_maps.mp4"), fps=args.fps)
    print(f"[visualize] wrote {args.out}/motion_maps.png" + (" and motion_maps.mp4" if args.clip else ""))



