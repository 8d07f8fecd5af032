"""The model beside its baselines: one table of map ROC-AUC and LOSO recognition per
method (the demo's ``results.md``/``results.png``, bench/bench_evidence.py's rows)."""
from __future__ import annotations

import os

from .maps import MAP_NAMES

# the methods of the comparison, in table order (keys of map_summary and of loso.json)
METHODS = ("model", "untrained", "pixel_difference", "optical_flow", "location_prior")


def loso_parts(res: dict):
    """(the model's LOSO metrics with the run's scalars (chance_uf1, n_classes, ...),
    {baseline: metrics}) from ``evaluate``/``finetune``'s result."""
    scalars = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    return {**scalars, **res.get("model", {})}, dict(res.get("baselines", {}))


def comparison_rows(results: dict) -> list:
    """Rows (method, map_auc, map_control, loso_accuracy, loso_uf1, loso_uar) from the
    demo's ``results.json`` dict (``loso``: the model's metrics and ``baselines``): every
    map method computed (``map_diagnostics``) and every LOSO method, ranked by map ROC-AUC
    (methods without a map last); None where a method has no such number (the location
    prior has no LOSO; the encoder read-outs no LOSO run)."""
    diag = {r["key"]: r for r in results.get("map_diagnostics", [])}
    loso = results.get("loso", {})
    keys = [k for k in METHODS if k in diag or k in loso.get("baselines", {}) or k == "model"]
    keys += [k for k in list(diag) + list(loso.get("baselines", {})) if k not in keys]
    rows = []
    for k in keys:
        m = (loso if "uf1" in loso else None) if k == "model" else loso.get("baselines", {}).get(k)
        if k not in diag and m is None:
            continue
        rows.append({"method": MAP_NAMES.get(k, k),
                     "map_auc": diag[k]["roc_auc"] if k in diag else None,
                     "map_control": diag[k]["control_no_motion"] if k in diag else None,
                     "loso_accuracy": m["accuracy"] if m else None,
                     "loso_uf1": m["uf1"] if m else None,
                     "loso_uar": m["uar"] if m else None})
    return sorted(rows, key=lambda r: (r["map_auc"] is None, -(r["map_auc"] or 0.0)))


def markdown_table(rows: list) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]) + "\n"


# the demo's verdict metrics: results.json's names -> printed names
VERDICT_LABELS = {"map_auc": "map ROC-AUC", "loso_uf1": "LOSO UF1", "loso_uar": "LOSO UAR"}


def demo_chance(results: dict) -> dict:
    """Chance of each verdict metric: map ROC-AUC 0.5 (a map that ranks at random), LOSO UF1
    and UAR 1/classes."""
    n = results.get("loso", {}).get("n_classes")
    return {"map_auc": 0.5, **({"loso_uf1": 1.0 / n, "loso_uar": 1.0 / n} if n else {})}


def demo_verdict_lines(results: dict, rows: list) -> list:
    """results.md's first lines: the verdict, chance per metric, the best baselines, the
    model's no-motion control and the pre-training split."""
    from .verdict import verdict_lines
    by = {r["method"]: r for r in rows}
    model = by.get(MAP_NAMES["model"], {})
    baselines = {k: v for k, v in by.items() if k != MAP_NAMES["model"]}
    n = results.get("loso", {}).get("n_classes")
    notes = {"map_auc": "a map that ranks pixels at random"}
    if n:
        notes.update({"loso_uf1": f"1/{n} classes", "loso_uar": f"1/{n} classes"})
    names = {MAP_NAMES["untrained"]: "untrained"}
    baselines = {names.get(k, k): v for k, v in baselines.items()}
    lines = verdict_lines(model, baselines, demo_chance(results), VERDICT_LABELS,
                          {"untrained": MAP_NAMES["untrained"]}, notes)
    if model.get("map_control") is not None:
        auc, ctl = model["map_auc"], model["map_control"]
        lines += [f"No-motion control: the model's map scores {ctl:.3f} on pairs without motion "
                  f"against {auc:.3f} with it; " + (
                      "it scores as well without motion, so it reads place or texture, not motion."
                      if ctl >= auc - 0.02 else f"it falls by {auc - ctl:.3f} without motion.")
                  + " (A map that reads motion scores 0.5 there.)", ""]
    if results.get("split"):
        lines += [f"Split: {results['split']}", ""]
    return lines


def save_bars(path: str, rows: list, title: str = "", chance: dict = None) -> None:
    """Grouped bars: map ROC-AUC (and its no-motion control) and LOSO UF1 per method, a
    dashed chance line per metric (``chance``: {row key: level})."""
    from .viz import save_bars as bars
    bars(path, {r["method"]: r for r in rows},
         keys=(("map_auc", "map ROC-AUC"), ("map_control", "map ROC-AUC, no-motion control"),
               ("loso_uf1", "LOSO UF1")),
         chance=chance or {"map_auc": 0.5, "map_control": 0.5}, ylim=(0, 1.3), title=title)


def write_comparison(out_dir: str, results: dict, title: str = "") -> str:
    """``results.md`` (the verdict, chance, best baselines, the split, then the table of
    every method ranked) and ``results.png`` (bars) in ``out_dir``; returns the table."""
    rows = comparison_rows(results)
    table = markdown_table(rows)
    chance = demo_chance(results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(f"# {title}\n\n" if title else "")
        f.write("\n".join(demo_verdict_lines(results, rows)) + "\n")
        f.write("Every method computed, ranked by map ROC-AUC:\n\n" + table)
        f.write("\nmap_auc: ROC-AUC of each method's map of held-out subjects' onset -> apex "
                "against the exact motion masks (chance 0.5); map_control: the same map on "
                "(apex, apex), no motion (0.5: no prior); LOSO: a linear head on each method's "
                "features, leave-one-subject-out (chance UF1 and UAR "
                + (f"{chance['loso_uf1']:.3f}" if "loso_uf1" in chance else "1/classes")
                + "); –: not computed for that method.\n")
    save_bars(os.path.join(out_dir, "results.png"), rows, title,
              {"map_auc": 0.5, "map_control": 0.5, "loso_uf1": chance.get("loso_uf1")})
    return table
