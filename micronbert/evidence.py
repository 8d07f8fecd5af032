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
    demo's ``results.json`` dict (``loso``: the model's metrics and ``baselines``); None
    where a method has no such number (the location prior has no LOSO; baselines without a
    LOSO run)."""
    diag = {r["key"]: r for r in results.get("map_diagnostics", [])}
    loso = results.get("loso", {})
    rows = []
    for k in METHODS:
        m = (loso if "uf1" in loso else None) if k == "model" else loso.get("baselines", {}).get(k)
        if k not in diag and m is None:
            continue
        rows.append({"method": MAP_NAMES[k],
                     "map_auc": diag[k]["roc_auc"] if k in diag else None,
                     "map_control": diag[k]["control_no_motion"] if k in diag else None,
                     "loso_accuracy": m["accuracy"] if m else None,
                     "loso_uf1": m["uf1"] if m else None,
                     "loso_uar": m["uar"] if m else None})
    return rows


def markdown_table(rows: list) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]) + "\n"


def save_bars(path: str, rows: list, title: str = "") -> None:
    """Grouped bars: map ROC-AUC (and its no-motion control) and LOSO UF1 per method."""
    from .viz import save_bars as bars
    bars(path, {r["method"]: r for r in rows},
         keys=(("map_auc", "map ROC-AUC"), ("map_control", "map, no-motion control"), ("loso_uf1", "LOSO UF1")),
         chance=0.5, chance_label="0.5", ylim=(0, 1.25), title=title)


def write_comparison(out_dir: str, results: dict, title: str = "") -> str:
    """``results.md`` (the table) and ``results.png`` (bars) in ``out_dir``; returns the table."""
    rows = comparison_rows(results)
    table = markdown_table(rows)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(f"# {title}\n\n" if title else "")
        f.write(table)
        f.write("\nmap_auc: ROC-AUC of each method's map of held-out subjects' onset -> apex "
                "against the exact motion masks; map_control: the same map on (apex, apex), "
                "no motion (0.5: no prior); LOSO: a linear head on each method's features, "
                "leave-one-subject-out.\n")
    save_bars(os.path.join(out_dir, "results.png"), rows, title)
    return table
