"""The study (``python bench/bench_evidence.py --study``): how the paper's μ-BERT and its
ablations behave as pre-training grows, on the demo's data (motion benchmark, held-out
subjects, pre-training on other faces only), beside the baselines on the same folds.

For each ablation and each budget (steps; budget 0 = the untrained model of the same
config and seed), a fresh model is pre-trained with the demo's recipe (its own warm-up +
cosine over that budget) and scored:

- map ROC-AUC of held-out subjects' onset -> apex against the exact masks, its no-motion
  control (apex, apex) and the ROC-AUC by micro-motion amplitude;
- LOSO UF1/UAR of a linear probe on the frozen encoder + DMA features (all 8 subjects);
- LOSO UF1 of end-to-end fine-tuning (at budget 0 and the largest budget only: it costs most;
  ``--budget small`` fine-tunes only the paper's config).

Baselines, once per data set, on the same clips and folds: the pixel difference and optical
flow (maps and LOSO probe), the location prior and the pixel cosine (maps).

Each measured cell is appended to WORK/study.jsonl as soon as it is measured; a rerun with the
same settings skips the cells already there (a stopped study loses one cell, not the study).
Tables and plots: study.{csv,md,png}, study_baselines.{csv,md} under
bench/results/<device>/evidence/.
"""
from __future__ import annotations

import copy
import json
import os
import time
from types import SimpleNamespace

# name -> (what it changes, model config, config overrides, δ range of the pre-training pairs)
PAPER_DELTA = (1, 6)  # the demo's range: clips are 12 frames long
ABLATIONS = {
    "paper": ("the paper's μ-BERT (DMA, PoI gate, DINO PoI loss, swap 0.5)", "micronbert_tiny", {}, PAPER_DELTA),
    "poi_off": ("no PoI: no gate, no PoI loss", "micronbert_tiny", {"poi_mask": "none", "poi_loss": "none"},
                PAPER_DELTA),
    "poi_mse": ("PoI loss MSE (the paper's text) instead of DINO (the authors' code)", "micronbert_tiny",
                {"poi_loss": "mse"}, PAPER_DELTA),
    "swap_0.25": ("swap ratio 0.25", "micronbert_tiny", {"swap_ratio": 0.25}, PAPER_DELTA),
    "swap_0.75": ("swap ratio 0.75", "micronbert_tiny", {"swap_ratio": 0.75}, PAPER_DELTA),
    "delta_1_2": ("pairs 1-2 frames apart", "micronbert_tiny", {}, (1, 2)),
    "delta_4_10": ("pairs 4-10 frames apart", "micronbert_tiny", {}, (4, 10)),
    "nullkey": ("our variant: null key + match target (opt-in, not the paper)", "micronbert_tiny_nullkey", {},
                PAPER_DELTA),
    "diag_loss": ("+ the optional diagonal loss smooth-L1(D, swap mask) at weight 1 (off in the paper's config)",
                  "micronbert_tiny", {"lambda_diag": 1.0}, PAPER_DELTA),
}

# budget -> (steps per ablation, extra steps of the paper's config, data, fine-tuning epochs,
# finetune_all: fine-tune every ablation at its largest budget, or only the paper's config:
# small leaves the ablations' fine-tunes out, each costs ~5 CPU-minutes)
STUDY_BUDGETS = {
    "tiny": dict(steps=(0, 2), paper_extra=(), subjects=3, clips_per_class=1, held_out=1, corpus_faces=2,
                 corpus_clips=2, batch=4, finetune_epochs=1, ablations=("paper", "poi_off"), finetune_all=True),
    "small": dict(steps=(0, 200, 800), paper_extra=(2400,), subjects=8, clips_per_class=3, held_out=2,
                  corpus_faces=48, corpus_clips=8, batch=32, finetune_epochs=10, ablations=tuple(ABLATIONS),
                  finetune_all=False),
    "full": dict(steps=(0, 300, 1200, 4800), paper_extra=(19200,), subjects=8, clips_per_class=3, held_out=2,
                 corpus_faces=48, corpus_clips=8, batch=32, finetune_epochs=30, ablations=tuple(ABLATIONS),
                 finetune_all=True),
}


def prepare(work: str, b: dict, seed: int, nuisance: str):
    """The demo's data (labeled set + corpus of other faces) and the map inputs."""
    from micronbert.cli.demo import synthesise
    from micronbert.config import get_config
    from micronbert.maps import amplitude_groups, location_prior, onset_apex_masks
    args = SimpleNamespace(out=work, subjects=b["subjects"], clips_per_class=b["clips_per_class"], seed=seed,
                           corpus_faces=b["corpus_faces"], corpus_clips=b["corpus_clips"],
                           held_out=b["held_out"], nuisance=nuisance, benchmark="motion")
    data = os.path.join(work, "data")
    table, held, clips, split = synthesise(args, data)
    size = get_config("micronbert_tiny").img_size
    test = table[table.subject.isin(held)]
    on, ap, truth = onset_apex_masks(test, os.path.join(data, "masks"), size)
    prior = location_prior(table[~table.subject.isin(held)], os.path.join(data, "masks"), size)
    return SimpleNamespace(table=table, clips=clips, split=split, on=on, ap=ap, truth=truth, prior=prior,
                           groups=amplitude_groups(test, data), classes=table.attrs["classes"])


def pretrained(name: str, steps: int, d, b: dict, seed: int, work: str, precision: str):
    """A fresh model of ablation ``name`` (seed ``seed``) after ``steps`` of the demo's recipe."""
    import torch

    from micronbert.data.loaders import pretrain_loader
    from micronbert.model import create_model
    from micronbert.train import train
    _, config, overrides, delta = ABLATIONS[name]
    torch.manual_seed(seed)
    model = create_model(config, **overrides)
    if steps:
        loader = pretrain_loader(d.clips, model.config, b["batch"], delta, seed)
        train(model, loader, steps, os.path.join(work, "runs", f"{name}-{steps}"), lr=2e-3,
              warmup=max(1, steps // 20), ckpt_every=steps, precision=precision, progress=False)
    return model


def score(model, d, work: str, seed: int, precision: str, finetune_epochs: int = 0) -> dict:
    """The cell's numbers: the map (+ control, by amplitude), the LOSO probe, and with
    ``finetune_epochs`` the LOSO fine-tune."""
    from micronbert.maps import map_diagnostics
    from micronbert.recognition.finetune import finetune
    from micronbert.recognition.probe import evaluate
    m, = map_diagnostics(model, d.on, d.ap, d.truth, groups=d.groups, precision=precision, keys=("model",))
    out = {"map_auc": m["roc_auc"], "map_control": m["control_no_motion"],
           **{f"map_auc {g}": v for g, v in m.get("by_group", {}).items()}}
    res = evaluate(model, d.table, os.path.join(work, "loso"), d.classes, baselines=False, seed=seed,
                   precision=precision)
    out.update(probe_uf1=res["model"]["uf1"], probe_uar=res["model"]["uar"])
    if finetune_epochs:
        res = finetune(copy.deepcopy(model), d.table, os.path.join(work, "finetune"), d.classes, baselines=False,
                       progress=False, epochs=finetune_epochs, seed=seed, precision=precision)
        out["finetune_uf1"] = res["model"]["uf1"]
    return out


MODEL_FREE = ("pixel_difference", "optical_flow", "location_prior", "pixel_cosine")  # maps.MAP_NAMES keys


def baselines(d, work: str, seed: int, precision: str) -> list:
    """Rows of the model-free methods on the same clips and folds: maps and LOSO probe."""
    from micronbert.maps import map_diagnostics
    from micronbert.model import create_model
    from micronbert.recognition.probe import evaluate
    model = create_model("micronbert_tiny")  # only its patch grid is used by the pixel methods
    rows = map_diagnostics(model, d.on, d.ap, d.truth, prior=d.prior, groups=d.groups, precision=precision,
                           keys=MODEL_FREE)
    res = evaluate(model, d.table, os.path.join(work, "loso-baselines"), d.classes,
                   baselines=["pixel_difference", "optical_flow"], seed=seed, precision=precision)
    out = []
    for r in rows:  # the model's own read-outs are cells of the study
        loso = res["baselines"].get(r["key"], {})
        out.append({"method": r["map"], "map_auc": r["roc_auc"], "map_control": r["control_no_motion"],
                    **{f"map_auc {g}": v for g, v in r.get("by_group", {}).items()},
                    "probe_uf1": loso.get("uf1"), "probe_uar": loso.get("uar")})
    out.append({**{k: None for k in out[0]}, "method": "chance", "map_auc": 0.5, "map_control": 0.5,
                "probe_uf1": res.get("chance_uf1"), "probe_uar": 1.0 / len(d.classes)})
    return out


def cells(b: dict):
    """(ablation, steps, fine-tune?) in the order they are run: every ablation's budgets, the
    paper's extra budgets last; fine-tuning at each ablation's largest budget (only the paper's
    where not ``finetune_all``) and of the paper's untrained model (budget 0), the reference
    every fine-tune is compared with."""
    for name in b["ablations"]:
        steps = tuple(b["steps"]) + (tuple(b["paper_extra"]) if name == "paper" else ())
        for s in steps:
            yield name, s, (s == steps[-1] and (b["finetune_all"] or name == "paper")) or (s == 0 and name == "paper")


def done_cells(path: str, key: dict) -> dict:
    """{(ablation, steps): row} already measured under the same settings ``key``."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r.get("settings") == key:
                    out[(r["ablation"], r["steps"])] = r
    return out


def saved(path: str, key: dict):
    """The JSON file ``path`` when it was written under the settings ``key``, else None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        d = json.load(f)
    return d if d.get("settings") == key else None


def run_study(budget: str, work: str, seed: int = 0, nuisance: str = "medium", precision: str = "auto",
              only=None) -> list:
    """Runs (or resumes) the study; returns its rows (one per ablation and budget)."""
    from micronbert.runs import atomic_output
    b = dict(STUDY_BUDGETS[budget])
    if only:
        b["ablations"] = tuple(a for a in b["ablations"] if a in only)
    os.makedirs(work, exist_ok=True)
    key = {"budget": budget, "seed": seed, "nuisance": nuisance, "precision": precision}
    path = os.path.join(work, "study.jsonl")
    done = done_cells(path, key)
    todo = list(cells(b))
    set_path, base_path = os.path.join(work, "set.json"), os.path.join(work, "baselines.json")
    if all((n, s) in done for n, s, _ in todo) and saved(set_path, key) and saved(base_path, key):
        return [done[(n, s)] for n, s, _ in todo]  # every cell measured: no set to synthesise again
    t0 = time.time()
    d = prepare(os.path.join(work, "set"), b, seed, nuisance)
    with atomic_output(set_path) as tmp, open(tmp, "w") as f:  # what the cells were scored on
        json.dump({"settings": key, "amplitude_groups": {g: int(sel.sum()) for g, sel in d.groups.items()},
                   "held_out_clips": len(d.on), "clips": len(d.table), "split": d.split["text"]}, f, indent=1)
    if not saved(base_path, key):
        with atomic_output(base_path) as tmp, open(tmp, "w") as f:  # a kill leaves no half file
            json.dump({"settings": key, "rows": baselines(d, work, seed, precision)}, f, indent=1)
    rows = []
    for i, (name, steps, ft) in enumerate(todo):
        if (name, steps) in done:
            rows.append(done[(name, steps)])
            continue
        print(f"[study] {i + 1}/{len(todo)} {name} at {steps} steps "
              f"({(time.time() - t0) / 60:.1f} min so far)", flush=True)
        t = time.time()
        model = pretrained(name, steps, d, b, seed, work, precision)
        t_train = time.time() - t
        row = {"settings": key, "ablation": name, "steps": steps, "pretrain_s": round(t_train, 1),
               **score(model, d, work, seed, precision, b["finetune_epochs"] if ft else 0)}
        row["score_s"] = round(time.time() - t - t_train, 1)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows
