"""``micronbert demo``: synthesise, pre-train, score the maps and LOSO recognition beside
their baselines, on the CPU."""
from __future__ import annotations

import json
import os
import time

from ..kernels.backend import precision
from .commands import model_from


def demo(args) -> dict:
    """Synthesise a micro-expression set from real faces (``--benchmark``, default motion;
    ``--nuisance``: head motion, light, noise, blur, compression), pre-train a small μ-BERT
    (the paper's method, ``micronbert_tiny``, unless ``--model`` names a variant) on the CPU
    on unlabeled clips of other faces only (no subject that LOSO scores), and score its
    micro-motion maps (held-out subjects) and LOSO recognition beside every baseline
    computed: results.json, results.md (opening with the verdict, ``verdict.py``),
    results.png. Nothing is tuned to pass: the table is what it measures."""
    import torch

    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = os.path.join(args.out, "data")
    stages = {}  # seconds of each stage, in results.json
    t = time.time()
    table, held, train_clips, split = synthesise(args, data)
    test_table = table[table.subject.isin(held)]
    stages["synthesise"], t = time.time() - t, time.time()
    model, untrained, records = _pretrain(args, train_clips)
    stages["pretrain"], t = time.time() - t, time.time()
    print("[demo] 3/4 micro-motion maps of held-out subjects", flush=True)
    maps = _maps(args, model, untrained, table, held, test_table, data)
    stages["maps"], t = time.time() - t, time.time()
    print("[demo] 4/4 leave-one-subject-out recognition (model and baselines)", flush=True)
    from ..recognition.probe import evaluate
    res = evaluate(model, table, args.out, table.attrs["classes"], baselines=True, seed=args.seed,
                   precision=getattr(args, "precision", "auto"))
    stages["loso"] = time.time() - t
    out = _results(args, model, maps, res, records, split, t_start)
    out["stage_seconds"] = {k: round(v, 1) for k, v in stages.items()}
    _write(args, out)
    return out


def synthesise(args, data):
    """The labeled set (``data``) and the unlabeled corpus of other faces: (the table, the
    held-out subjects, the clips pre-training sees: the corpus only, so pre-training sees
    no face that LOSO scores)."""
    from ..data.annotations import load_annotations
    from ..data.pairs import find_clips
    from ..data.synthetic import face_images, write_pretraining_corpus, write_synthetic_dataset
    from ..runs import UsageError
    nuisance = getattr(args, "nuisance", "none")
    benchmark = getattr(args, "benchmark", "motion")
    print(f"[demo] 1/4 synthesising {args.subjects} subjects x {args.clips_per_class} clips per class, "
          f"benchmark {benchmark}, nuisance {nuisance} -> {data}", flush=True)
    write_synthetic_dataset(data, n_subjects=args.subjects, clips_per_class=args.clips_per_class,
                            seed=args.seed, nuisance=nuisance, benchmark=benchmark)
    extra = range(args.subjects, min(len(face_images(64)), args.subjects + args.corpus_faces))
    if not len(extra):
        raise UsageError(f"--subjects {args.subjects} leaves no face for the pre-training corpus "
                         f"(--corpus-faces {args.corpus_faces}; 101 faces in all): pre-training uses "
                         "only faces that LOSO never scores")
    corpus_clips = find_clips(write_pretraining_corpus(os.path.join(args.out, "corpus"), extra,
                                                       args.corpus_clips, seed=args.seed + 1,
                                                       nuisance=nuisance))
    table = load_annotations("synthetic", data)
    subjects = sorted(table.subject.unique())
    held = subjects[-args.held_out:]
    split = {"pretrain_faces": [int(extra[0]), int(extra[-1])], "pretrain_clips": len(corpus_clips),
                  "loso_subjects": subjects, "map_subjects": held,
                  "text": f"pre-training saw only {len(corpus_clips)} unlabeled clips of {len(extra)} other "
                          f"faces (scikit-image faces {extra[0]}-{extra[-1]}), none of the "
                          f"{len(subjects)} labeled subjects that LOSO scores (faces 0-{args.subjects - 1}); "
                          f"maps scored on {', '.join(held)}; the location prior is the mean mask of "
                          "the other labeled subjects."}
    return table, held, sorted(corpus_clips), split


def _pretrain(args, train_clips):
    """The model pre-trained on ``train_clips`` through pretrain's loader factory (sized by
    the model's config), its untrained twin, and the log records."""
    import copy

    from ..data.loaders import pretrain_loader
    from ..train import train
    model = model_from(args)
    untrained = copy.deepcopy(model)  # the same seed's model, scored beside the trained one
    print(f"[demo] 2/4 pre-training {args.model} for {args.steps} steps on {len(train_clips)} "
          f"unlabeled clips of other faces (no LOSO subject)", flush=True)
    loader = pretrain_loader(train_clips, model.config, args.batch, (1, 6), args.seed)
    records = train(model, loader, args.steps, os.path.join(args.out, "pretrain"), lr=args.lr,
                    warmup=max(1, args.steps // 20), ckpt_every=max(1, args.steps),
                    precision=getattr(args, "precision", "auto"))
    return model, untrained, records


def _maps(args, model, untrained, table, held, test_table, data) -> dict:
    """The held-out subjects' maps beside their baselines: motion_maps.png, loss.png; the
    numbers results.json keeps."""
    import torch

    from ..maps import (amplitude_groups, covering_rows, location_prior, map_diagnostics, map_summary,
                        onset_apex_masks)
    from ..viz import read_log, save_curves, save_motion_maps
    on, ap, truth = onset_apex_masks(test_table, os.path.join(data, "masks"), model.config.img_size)
    k = covering_rows(test_table)  # a row per class (no_motion too), the subjects taking turns
    with torch.no_grad(), precision(on.device, getattr(args, "precision", "auto")):  # the picture's rows only:
        maps = model.eval().micro_motion_map(on[k], ap[k]).float()  # the scores are map_diagnostics'
    prior = location_prior(table[~table.subject.isin(held)], os.path.join(data, "masks"),
                           model.config.img_size)
    diagnostics = map_diagnostics(model, on, ap, truth, untrained=untrained, prior=prior,
                                  groups=amplitude_groups(test_table, data),
                                  precision=getattr(args, "precision", "auto"))
    summary = map_summary(diagnostics)
    # the numbers from the one computation the table shows too (same precision, same batches)
    row = next(r for r in diagnostics if r["key"] == "model")
    auc1, auc_still = row["roc_auc"], row["control_no_motion"]
    save_motion_maps(os.path.join(args.out, "motion_maps.png"), on[k], ap[k], maps, truth[k],
                     title=f"{args.model} after {args.steps} steps, one clip per class of held-out "
                           f"subjects: map ROC-AUC {auc1:.3f} over all their clips (0.5 = chance; "
                           f"untrained {summary['untrained']:.3f}; pixel difference "
                           f"{summary['pixel_difference']:.3f}; same map without motion {auc_still:.3f})",
                     row_labels=[f"{r.subject} {r.clip}\nclass: {r.emotion}\nframes {r.onset} -> {r.apex}"
                                 f"\n(d = {r.apex - r.onset})" for r in test_table.iloc[k].itertuples()])
    save_curves(os.path.join(args.out, "loss.png"),
                read_log(os.path.join(args.out, "pretrain", "log.jsonl")),
                title=f"{args.model}: pre-training losses")
    print("[demo] maps beside their baselines (ROC-AUC on held-out clips; control = no motion):\n"
          + "\n".join(f"  {r['map']:<38} {r['roc_auc']:.3f}  control {r['control_no_motion']:.3f}"
                       for r in diagnostics), flush=True)
    return {"map_auc": auc1, "map_auc_untrained": summary["untrained"], "map_auc_no_motion_control": auc_still,
            "map_baselines": {k: v for k, v in summary.items() if k != "model"},
            "map_diagnostics": diagnostics}


def _results(args, model, maps: dict, res: dict, records, split: dict, t_start: float) -> dict:
    """results.json's dict: the maps' numbers, loso.json's model and baselines, the run."""
    from ..evidence import loso_parts
    loso_model, loso_base = loso_parts(res)
    keep = ("accuracy", "uf1", "uar", "chance_uf1", "n_classes", "n_subjects")
    return {**maps,
            "loso": {**{k: loso_model[k] for k in keep if k in loso_model},
                     "baselines": {b: {k: m[k] for k in ("accuracy", "uf1", "uar") if k in m}
                                   for b, m in loso_base.items()}},
            "nuisance": getattr(args, "nuisance", "none"),
            "benchmark": getattr(args, "benchmark", "motion"),
            "precision": records[-1].get("precision") if records else None,
            "split": split["text"], "split_detail": {k: v for k, v in split.items() if k != "text"},
            "pretrain": {"steps": args.steps, "batch": args.batch, "clips": split["pretrain_clips"],
                         "model": args.model, "overrides": json.loads(args.overrides or "{}"),
                         "extensions": model.config.extensions(),
                         "rec_loss_first10": sum(r["rec_loss"] for r in records[:10]) / max(1, len(records[:10])),
                         "rec_loss_last10": sum(r["rec_loss"] for r in records[-10:]) / max(1, len(records[-10:]))},
            "seconds": round(time.time() - t_start, 1)}


def _write(args, out: dict) -> None:
    """results.json, results.md and results.png, and their summary on stdout."""
    from ..evidence import write_comparison
    nuisance = out["nuisance"]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    table_md = write_comparison(args.out, out, f"{args.model}, {args.steps} steps, benchmark "
                                               f"{out['benchmark']}, nuisance {nuisance}, seed {args.seed}")
    print(f"[demo] the model beside its baselines (nuisance {nuisance}):\n{table_md}")
    print(f"[demo] {out['seconds']:.0f} s in all: " + ", ".join(
        f"{k} {v:.0f} s" for k, v in out.get("stage_seconds", {}).items()))
    print(f"[demo] wrote {args.out}: results.md, results.json (every number), results.png, motion_maps.png, "
          f"confusion.png, loso_bars.png, loss.png, loso.json, folds.csv")
    _print_next(args)


def _print_next(args) -> None:
    """Where the demo's checkpoint is, and the commands that use it."""
    ck, data = os.path.join(args.out, "pretrain", "last.pt"), os.path.join(args.out, "data")
    print(f"[demo] checkpoint: {ck} ({args.model}, {args.steps} steps)\n"
          f"[demo] next: use it on the demo's data (or your own), or run the steps yourself (README):\n"
          f"  micronbert evaluate --data {data} --checkpoint {ck} --out runs/demo-eval\n"
          f"  micronbert visualize --checkpoint {ck} --clip {os.path.join(data, 'sub01', 'EP01_01')} "
          f"--out runs/demo-viz\n"
          f"  micronbert spot --video VIDEO --checkpoint {ck} --out runs/demo-spot")
