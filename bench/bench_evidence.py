"""The model against its baselines across nuisance levels: map ROC-AUC (held-out subjects,
exact masks) and LOSO recognition of the paper's μ-BERT (micronbert_tiny) after the demo's
pre-training, beside the untrained model, the pixel difference, optical flow (Farneback)
and the location prior, on `micronbert synth --nuisance {none,low,medium,high}` data.

Each level is one `micronbert demo --nuisance LEVEL` run (the same code, one implementation);
its folder (data, checkpoint, results.json/md/png) goes to --work/LEVEL-seedS.

    python bench/bench_evidence.py                      # --budget full: the demo's settings
    python bench/bench_evidence.py --budget tiny        # a smoke run (minutes on 2 cores)
    python bench/bench_evidence.py --study --budget small   # the study (bench/evidence_study.py):
                                                        # ablations x pre-training budgets, ~1 h CPU
    python bench/bench_evidence.py --study --budget full    # 4 budgets to 4800 steps (paper: 19200); a GPU

Budgets (steps, subjects, clips per class, held-out, corpus faces x clips):
  tiny   3 steps,   3 subjects, 1 clip,  1 held out,  2 x 2   (checks the pipeline, numbers mean nothing)
  small  150 steps, 8 subjects, 2 clips, 2 held out, 16 x 4
  full   the demo's defaults: 600 steps, 8 subjects, 3 clips, 2 held out, 48 x 8
         (one medium level took 8.8 CPU-minutes (user + sys): about 5 minutes of wall time on
         a quiet 2-core CPU, so about 20 minutes for the four levels; a GPU is not used)

Writes bench/results/<device>/evidence/evidence.{csv,md,png} (one row per level, seed and
method; LOSO of the pixel difference and optical flow where `evaluate` scores baselines) and
evidence_by_amplitude.{csv,md} (map ROC-AUC of the held-out clips by micro-motion amplitude).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, device_name, write_table  # noqa: E402
from micronbert.evidence import comparison_rows  # noqa: E402

BUDGETS = {
    "tiny": ["--steps", "3", "--batch", "4", "--subjects", "3", "--clips-per-class", "1", "--held-out", "1",
             "--corpus-faces", "2", "--corpus-clips", "2"],
    "small": ["--steps", "150", "--subjects", "8", "--clips-per-class", "2", "--held-out", "2",
              "--corpus-faces", "16", "--corpus-clips", "4"],
    "full": [],
}
LEVELS = ("none", "low", "medium", "high")


def plot(rows):
    def draw(path):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        levels = list(dict.fromkeys(r["nuisance"] for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for ax, key, label in ((axes[0], "map_auc", "map ROC-AUC (held-out subjects)"),
                               (axes[1], "loso_uf1", "LOSO UF1")):
            for m in methods:
                pts = [(levels.index(r["nuisance"]), r[key]) for r in rows
                       if r["method"] == m and r[key] is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o", label=m)
            ax.set_xticks(range(len(levels)), levels)
            ax.set_xlabel("nuisance level")
            ax.set_ylabel(label)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return draw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=tuple(BUDGETS), help="size of each demo run (default full), or of "
                   "the study (--study; default small)")
    p.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--model", default="micronbert_tiny", help="named config (the paper's μ-BERT by default)")
    p.add_argument("--work", default="runs/evidence", help="folder of the demo runs")
    p.add_argument("--study", action="store_true", help="the study: ablations x budgets (evidence_study.py)")
    p.add_argument("--only", nargs="+", help="--study: only these ablations")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    a = p.parse_args(argv)
    os.environ.setdefault("MICRONBERT_BENCH_OUT", os.path.join(
        RESULTS, device_name("cpu").replace(" ", "_"), "evidence"))
    if a.study:
        return study(a)
    a.budget = a.budget or "full"
    from micronbert.cli import main as cli

    rows, by_amp = [], []
    for lv in a.levels:
        for seed in a.seeds:
            out = os.path.join(a.work, f"{a.budget}-{lv}-seed{seed}")
            print(f"[evidence] nuisance {lv}, seed {seed}, budget {a.budget} -> {out}", flush=True)
            cli(["demo", "--out", out, "--overwrite", "--nuisance", lv, "--seed", str(seed), "--model", a.model]
                + BUDGETS[a.budget])
            with open(os.path.join(out, "results.json")) as f:
                res = json.load(f)
            for r in comparison_rows(res):
                rows.append({"nuisance": lv, "seed": seed, "budget": a.budget, **r,
                             "loso_chance_uf1": res["loso"].get("chance_uf1"),
                             "steps": res["pretrain"]["steps"], "seconds": res["seconds"]})
            for r in res["map_diagnostics"]:
                for group, auc in r.get("by_group", {}).items():
                    by_amp.append({"nuisance": lv, "seed": seed, "budget": a.budget, "method": r["map"],
                                   "amplitude": group, "map_auc": auc})
    write_table("evidence", rows, "cpu", plot=plot(rows))
    if by_amp:  # the amplitude sweep (levels above none write it)
        write_table("evidence_by_amplitude", by_amp, "cpu")
    return rows


def study(a):
    """The study's cells (evidence_study.run_study) for each of ``--seeds``, then
    study.{csv,md,png} and study_baselines.* of every cell measured under these settings
    (also those of earlier runs with other ``--only``)."""
    from evidence_study import ABLATIONS, done_cells, run_study
    budget = a.budget or "small"
    nuisance = a.levels[0] if len(a.levels) == 1 else "medium"
    rows, base, notes = [], [], []
    for seed in a.seeds:
        work = os.path.join(a.work, f"study-{budget}-seed{seed}" + ("" if nuisance == "medium" else f"-{nuisance}"))
        run_study(budget, work, seed, nuisance, a.precision, a.only)
        key = {"budget": budget, "seed": seed, "nuisance": nuisance, "precision": a.precision}
        for r in done_cells(os.path.join(work, "study.jsonl"), key).values():
            r = {k: v for k, v in r.items() if k != "settings"}
            rows.append({"seed": seed, **r, "map_gap": r["map_auc"] - r["map_control"]})
        with open(os.path.join(work, "baselines.json")) as f:
            base += [{"seed": seed, **r} for r in json.load(f)["rows"]]
        with open(os.path.join(work, "set.json")) as f:
            notes.append(f"seed {seed}: data and split {os.path.join(work, 'set')}; held-out clips by "
                         f"amplitude {json.load(f)['amplitude_groups']}")
    cols = list(dict.fromkeys(c for r in rows for c in r))
    table = [{c: r.get(c) for c in cols} for r in rows]
    notes = [f"budget {budget}, nuisance {nuisance}, precision {a.precision} (motion benchmark, the demo's split)"] + notes + [
        "steps 0 = the untrained model of the same config and seed; each budget a fresh run "
        "with its own warm-up + cosine (the demo's recipe: batch, lr 2e-3)",
        "map_*: ROC-AUC of held-out subjects' onset -> apex maps (chance 0.5); map_control: the same "
        "map of (apex, apex), no motion; map_gap = map_auc - map_control (what the map owes to motion); "
        "probe_*: LOSO linear probe; finetune_uf1: LOSO fine-tune (n/a: not run)",
        "ablations: " + "; ".join(f"{k} = {ABLATIONS[k][0]}" for k in dict.fromkeys(r["ablation"] for r in rows))]
    name = "study" if nuisance == "medium" else f"study_{nuisance}"  # one table per nuisance level
    write_table(name, table, "cpu", plot=study_plot(table, base), notes=notes)
    write_table(f"{name}_baselines", base, "cpu", notes=notes[:len(a.seeds) + 1] + [
        "the model-free methods on the same held-out clips (maps) and folds (LOSO probe)"])
    return table


def study_plot(rows, base):
    """One panel per metric against the budget, a line per ablation (the mean over its seeds,
    each seed a dot; the legend gives how many), the model-free methods as dashed lines (the
    mean over the seeds)."""
    def draw(path):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        metrics = ("map_auc", "map_control", "map_gap", "probe_uf1", "finetune_uf1")
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8))
        for ax, key in zip(axes, metrics):
            for name in dict.fromkeys(r["ablation"] for r in rows):  # the mean over seeds; each seed a dot
                got = [r for r in rows if r["ablation"] == name and r.get(key) is not None]
                steps = sorted({r["steps"] for r in got})
                means = [sum(r[key] for r in got if r["steps"] == x) / sum(r["steps"] == x for r in got) for x in steps]
                n_seeds = len({r["seed"] for r in got})
                if steps:
                    line, = ax.plot([max(x, 50) for x in steps], means, marker="o",
                                    label=f"{name} ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
                                    lw=2.2 if name == "paper" else 1)
                    if n_seeds > 1:
                        ax.scatter([max(r["steps"], 50) for r in got], [r[key] for r in got], s=8,
                                   color=line.get_color(), alpha=0.5)
            seeds = {b["seed"] for b in base}
            for method in dict.fromkeys(b["method"] for b in base):  # model-free (fine-tuning: their probe)
                vals = [b.get(key if key != "finetune_uf1" else "probe_uf1") for b in base if b["method"] == method]
                vals = [v for v in vals if v is not None]
                v = sum(vals) / len(seeds) if len(vals) == len(seeds) and key != "map_gap" else None
                if key == "map_gap" and method == "chance":
                    v = 0.0
                if v is not None:
                    ax.axhline(v, ls="--", lw=0.8, color="grey")
                    ax.annotate(method, (0.01, v), xycoords=("axes fraction", "data"), fontsize=6)
            ax.set_xscale("log")
            ax.set_xlabel("pre-training steps (0 drawn at 50: untrained)")
            ax.set_title(key, fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return draw


if __name__ == "__main__":
    main()
