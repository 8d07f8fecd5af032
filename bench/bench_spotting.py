"""The spotting table of docs/spotting.md, from one run of one code version: synthesise the
long-video set and its no-nuisance control, pre-train micronbert_tiny on other faces, spot
both sets with the untrained model, the pre-trained model and the MDMD-style optical-flow
baseline, each at the default p and at p fitted leave-one-subject-out (MEGC protocol).

    python bench/bench_spotting.py             # the table (about 10 minutes on 2 CPU cores)
    python bench/bench_spotting.py --quick     # a smoke run (tiny sets, 2 steps; numbers mean nothing),
                                               # written to WORK/results ($MICRONBERT_BENCH_OUT when set)

Sets (``micronbert synth --long``, 30 fps, 128 px): "medium": 4 subjects x 2 videos x 20 s,
nuisance medium, seed 0; "control": 4 subjects x 1 video x 20 s, nuisance none, seed 1.
Pre-training (``micronbert pretrain``): unlabeled clips of scikit-image faces 10-57 (the sets
use faces 0-3), 8 clips per face, --steps (400) at batch 32, lr 2e-3, warm-up 20; precision
auto. The untrained model is the pre-training's starting point (same config, same seed).
Writes bench/results/<device>/spot/ ($MICRONBERT_BENCH_OUT when set): spot_table.{csv,md}
(a row per set, method and p, as measured; F1 and TP/FP/FN per class), spot_results.json
(every run's MEGC counts and fitted p), spot_f1.png (F1 at LOSO p) and score_002_1.png
(one video's curves, pre-trained model and flow); the runs themselves go to --work.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

from common import RESULTS, Table, device_name, results_folder  # noqa: E402

# set name -> synth --long flags
SETS = {
    "full": {"medium": dict(subjects=4, videos=2, seconds=20, size=128, nuisance="medium", seed=0),
             "control": dict(subjects=4, videos=1, seconds=20, size=128, nuisance="none", seed=1)},
    "quick": {"medium": dict(subjects=2, videos=1, seconds=3, size=64, nuisance="medium", seed=0),
              "control": dict(subjects=2, videos=1, seconds=3, size=64, nuisance="none", seed=1)},
}
# pre-training: corpus faces, clips per face, then `micronbert pretrain` flags (--steps apart)
PRETRAIN = {
    "full": (range(10, 58), 8, ["--batch", "32", "--lr", "2e-3", "--warmup", "20"]),
    "quick": (range(10, 12), 2, ["--batch", "4", "--lr", "2e-3", "--warmup", "1"]),
}
STEPS = {"full": 400, "quick": 2}
MODEL = "micronbert_tiny"
FLOW = "mdmd_flow"
SCORE_VIDEO = "002_1"  # the video whose score-over-time picture is kept
# what a run writes into the results folder (an older run's copies are removed first)
OUTPUTS = ("spot_table.csv", "spot_table.md", "spot_results.json", "spot_f1.png", "score_*.png")
CLASSES = ("micro", "macro")


def synthesise(work: str, sets: dict) -> dict:
    """``micronbert synth --long`` of each set into WORK/<set>; returns {set: folder}."""
    from micronbert.cli import main as cli
    out = {}
    for name, s in sets.items():
        out[name] = os.path.join(work, name)
        cli(["synth", "--long", "--out", out[name], "--overwrite", "--subjects", str(s["subjects"]),
             "--videos-per-subject", str(s["videos"]), "--seconds", str(s["seconds"]), "--fps", "30",
             "--size", str(s["size"]), "--nuisance", s["nuisance"], "--seed", str(s["seed"])])
    return out


def pretrain(work: str, size: str, steps: int, seed: int) -> dict:
    """The corpus of other faces, then ``micronbert pretrain``; returns what the table notes."""
    from micronbert.cli import main as cli
    from micronbert.data.synthetic import write_pretraining_corpus
    faces, clips, flags = PRETRAIN[size]
    corpus = write_pretraining_corpus(os.path.join(work, "corpus"), faces, clips_per_face=clips,
                                      seed=seed, progress=False)
    out = os.path.join(work, "pretrain")
    t0 = time.time()
    cli(["pretrain", "--data", corpus, "--out", out, "--overwrite", "--model", MODEL, "--steps", str(steps),
         "--ckpt-every", str(steps), "--seed", str(seed)] + flags)
    with open(os.path.join(out, "summary.json")) as f:
        last = json.load(f)["last"] or {}
    return {"checkpoint": os.path.join(out, "last.pt"), "seconds": round(time.time() - t0, 1),
            "faces": f"{faces[0]}-{faces[-1]}", "clips": len(faces) * clips, "flags": flags,
            "loss": {k: round(v, 4) for k, v in last.items() if k.endswith("loss")}}


def models(checkpoint: str, steps: int, seed: int, device: str) -> dict:
    """{label: (model, spot method)}: the untrained model (pre-training's start: the same
    config and seed), then the pre-trained one beside the flow baseline (one pass)."""
    from micronbert import create_model
    from micronbert.checkpoint import load_model
    torch.manual_seed(seed)  # as `micronbert pretrain --seed` before it builds the model
    return {f"{MODEL} untrained": (create_model(MODEL).to(device), "model"),
            f"{MODEL} pre-trained {steps} steps": (load_model(checkpoint).to(device), "both")}


def rows_of(set_name: str, label: str, summary: dict) -> list:
    """The table's rows of one run's method (``summary[...][method]``): default and LOSO p."""
    out = []
    for key, p in (("default_p", "default"), ("loso_p", "LOSO")):
        r = summary[key][label]
        fitted = r.get("p_per_subject")
        row = {"set": set_name, "method": label, "p": p,
               "p_value": " ".join(f"{s}:{v:g}" for s, v in sorted(fitted.items())) if fitted
               else f"{summary['params']['p']:g}"}
        for c in CLASSES:
            row |= {f"{c}_f1": round(r[c]["f1"], 3), f"{c}_tp": r[c]["tp"], f"{c}_fp": r[c]["fp"],
                    f"{c}_fn": r[c]["fn"]}
        row["overall_f1"] = round(r["overall"]["f1"], 3)
        out.append(row)
    return out


def spot_set(set_name: str, root: str, work: str, runs: dict, table: Table) -> dict:
    """Spot ``root`` with each of ``runs``; the rows go into ``table`` as they are measured.
    Returns {label: the run's scores} and the set's facts."""
    from micronbert.spot import spot_dataset
    res = {}
    for label, (model, method) in runs.items():
        out = os.path.join(work, f"spot-{set_name}-{label.split()[1]}")
        s = spot_dataset("synthetic_long", root, out, model, method=method, progress=False)
        names = {"micronbert": label, FLOW: FLOW}
        for key in ("default_p", "loso_p"):
            s[key] = {names[n]: v for n, v in s[key].items()}
        for n in s["default_p"]:
            if n not in res:
                for row in rows_of(set_name, n, s):
                    table.add(row)
        res |= {n: {"default_p": s["default_p"][n], "loso_p": s["loso_p"][n], "precision":
                    s["precision"] if n != FLOW else "fp32", "spot_seconds": s["seconds"], "out": out}
                for n in s["default_p"] if n not in res}
        if method == "both":
            facts = {k: s[k] for k in ("videos", "frames", "ground_truth", "params", "protocol")}
            facts |= {"verdict": s["verdict"], "pictures": out}
    return {"facts": facts, "runs": res}


def draw_f1(path: str, results: dict) -> None:
    """spot_f1.png: F1 per class at LOSO p, a group per set and method."""
    from micronbert.viz import save_bars
    bars = {f"{n} ({s})": {c: r["loso_p"][c]["f1"] for c in CLASSES + ("overall",)}
            for s, res in results.items() for n, r in res["runs"].items()}
    save_bars(path, bars, keys=[(c, f"{c} F1") for c in CLASSES + ("overall",)], ylim=(0, 1.15),
              title="synth --long: MEGC F1 (IoU >= 0.5), p fitted leave-one-subject-out")


def copy_score_picture(folder: str, results: dict) -> str:
    """score_<video>.png of the medium set's model+flow run (SCORE_VIDEO, else its first video)."""
    pics = results["medium"]["facts"]["pictures"]
    with open(os.path.join(pics, "videos", "names.json")) as f:
        folder_of = {video: name for name, video in json.load(f)["files"].items()}
    video = SCORE_VIDEO if SCORE_VIDEO in folder_of else sorted(folder_of)[0]
    dst = os.path.join(folder, f"score_{video}.png")
    shutil.copyfile(os.path.join(pics, "videos", folder_of[video], "score.png"), dst)
    return dst


def clear_outputs(folder: str) -> None:
    """An earlier run's files of this script (only those) are removed from ``folder``."""
    for pattern in OUTPUTS:
        for path in glob.glob(os.path.join(folder, pattern)):
            os.remove(path)


def set_notes(sets: dict, results: dict) -> list:
    notes = []
    for name, s in sets.items():
        f = results[name]["facts"]
        gt = f["ground_truth"]
        notes.append(f"set {name}: `synth --long --subjects {s['subjects']} --videos-per-subject {s['videos']} "
                     f"--seconds {s['seconds']} --fps 30 --size {s['size']} --nuisance {s['nuisance']} --seed {s['seed']}`: "
                     f"{f['videos']} videos, {f['frames']} frames, ground truth {gt['micro']} micro + "
                     f"{gt['macro']} macro; verdict (pre-trained model vs flow, LOSO p): {f['verdict']}")
    return notes


def code_version() -> str:
    """The checkout's commit (and "+ uncommitted changes" where the code differs from it; the
    results under bench/results/ are not code), or "unknown"."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,  # noqa: E731
                                        check=True, timeout=30).stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(a, size: str, device: str) -> dict:
    """The whole run (module doc) into results_folder(device)."""
    steps = a.steps or STEPS[size]
    folder = results_folder(device)
    clear_outputs(folder)
    t0, load = time.time(), os.getloadavg()[0]
    roots = synthesise(a.work, SETS[size])
    pre = pretrain(a.work, size, steps, a.seed)
    runs = models(pre["checkpoint"], steps, a.seed, device)
    table = Table("spot_table", device, notes=[
        f"code: {code_version()}",
        f"pre-training: `micronbert pretrain --model {MODEL} --steps {steps} --seed {a.seed} "
        f"{' '.join(pre['flags'])}` on {pre['clips']} unlabeled clips of scikit-image faces {pre['faces']} "
        f"(none of the sets' subjects), precision auto; last losses {pre['loss']}; {pre['seconds']} s",
        f"untrained: {MODEL} of the same config and seed (pre-training's starting weights)",
        "MEGC protocol: TP when IoU >= 0.5 with a ground truth of the same class, each matched once; "
        "counts summed over the set; p: the threshold mean + p (max - mean) per video, default or "
        "fitted leave-one-subject-out (p_value: per held-out subject); face crops: the model's at "
        "its image size (64 px), the flow's 112 px (spot's defaults)"])
    results = {name: spot_set(name, root, a.work, runs, table) for name, root in roots.items()}
    for line in set_notes(SETS[size], results):
        table.note(line)
    table.note(f"precision of the model's spotting: {results['medium']['runs'][list(runs)[1]]['precision']}; "
               f"wall time {time.time() - t0:.0f} s, load average {load:.2f} at the start on "
               f"{os.cpu_count()} cores (a shared machine)")
    with open(os.path.join(folder, "spot_results.json"), "w") as f:
        json.dump({"pretrain": pre, "sets": SETS[size], "results": results}, f, indent=2)
    draw_f1(os.path.join(folder, "spot_f1.png"), results)
    copy_score_picture(folder, results)
    table.finish()
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="pre-training steps (default 400; --quick: 2)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sets, 2 steps (seconds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus, pre-training and untrained model")
    p.add_argument("--work", help="folder of the sets, checkpoint and spot runs (default runs/spotting, "
                   "--quick: runs/spotting-quick)")
    a = p.parse_args(argv)
    size = "quick" if a.quick else "full"
    a.work = a.work or ("runs/spotting-quick" if a.quick else "runs/spotting")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # --quick never replaces the committed table: its results go to WORK/results unless redirected
    key, given = "MICRONBERT_BENCH_OUT", "MICRONBERT_BENCH_OUT" in os.environ
    if not given:
        os.environ[key] = os.path.join(a.work, "results") if a.quick else os.path.join(
            RESULTS, device_name(device).replace(" ", "_"), "spot")
    try:
        return run(a, size, device)
    finally:
        if not given:  # main() called in a process (a test) leaves its environment as it was
            del os.environ[key]


if __name__ == "__main__":
    main()
