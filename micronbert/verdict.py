"""Does it work? One sentence computed from the numbers, used by every result file (the
demo's ``results.md``, ``loso.json``/``loso.md``, ``spot_results.json``/``.md``): the model
against the best baseline of each metric, against chance, and against its untrained twin."""
from __future__ import annotations

from typing import Dict, List, Optional

# a score counts as above chance only by more than this (about one standard error of a
# UF1 over the demo's 168 clips); stated in every verdict
CHANCE_MARGIN = 0.05


def chance_levels(n_classes: int, class_counts=None) -> Dict[str, float]:
    """Chance of the recognition metrics: UF1 and UAR 1/classes (a uniform guess; UAR of any
    constant guess), accuracy the largest class's share (always guessing it), 1/classes
    without ``class_counts``."""
    top = max(class_counts) / sum(class_counts) if class_counts is not None and sum(class_counts) else 1 / n_classes
    return {"accuracy": float(top), "uf1": 1.0 / n_classes, "uar": 1.0 / n_classes}


def best_baselines(baselines: Dict[str, dict], metrics) -> Dict[str, tuple]:
    """{metric: (name, value)} of the baseline with the highest value of each metric (None
    values skipped; metrics no baseline has are left out)."""
    out = {}
    for m in metrics:
        have = [(v[m], n) for n, v in baselines.items() if v.get(m) is not None]
        if have:
            value, name = max(have)
            out[m] = (name, value)
    return out


def _listed(keys, labels) -> str:
    return ", ".join(labels.get(k, k) for k in keys)


def _relation(subject, who, below, above, keys, labels) -> str:
    """"S is below W on every metric", "... above ...", or the metrics of each side."""
    if len(below) == len(keys):
        return f"{subject} is below {who} on every metric"
    if len(above) == len(keys):
        return f"{subject} is above {who} on every metric"
    if not below:
        return f"{subject} is not below {who} on any metric (above on {_listed(above, labels) or 'none'})"
    return f"{subject} is below {who} on {_listed(below, labels)} (above on {_listed(above, labels) or 'none'})"


def verdict(model: Dict[str, float], baselines: Dict[str, dict], chance: Dict[str, float],
            labels: Optional[Dict[str, str]] = None, names: Optional[Dict[str, str]] = None,
            subject: str = "the model", margin: float = CHANCE_MARGIN) -> str:
    """One sentence: ``subject`` below/above the best baseline of each metric of ``chance``
    (named once when one baseline is best on every metric), above chance (by more than
    ``margin``) on which metrics, and, where a baseline "untrained" is, whether pre-training
    made it worse. ``labels``: metric -> printed name; ``names``: baseline -> printed name."""
    labels, names = labels or {}, names or {}
    scored = [m for m in chance if model.get(m) is not None]
    if not scored:
        return f"{subject} has no score to judge."
    best = best_baselines(baselines, scored)
    parts = []
    if best:
        below = [m for m in best if model[m] < best[m][1]]
        above = [m for m in best if model[m] > best[m][1]]
        who = {b for b, _ in best.values()}
        if len(who) == 1:
            parts.append(_relation(subject, f"{names.get(*who, *who)} (the best baseline)", below, above,
                                   list(best), labels))
        else:
            each = ", ".join(f"{labels.get(m, m)}: {names.get(b, b)} {v:.3f}" for m, (b, v) in best.items())
            parts.append(_relation(subject, f"the best baseline of each metric ({each})", below, above,
                                   list(best), labels))
    over = [m for m in scored if model[m] > chance[m] + margin]
    tail = "every metric" if len(over) == len(scored) else (
        "none" if not over else f"{_listed(over, labels)} only")
    parts.append(f"above chance (by more than {margin:g}) on {tail}")
    ref = baselines.get("untrained", {})
    worse = [m for m in scored if ref.get(m) is not None and model[m] < ref[m]]
    if worse:
        where = "every metric" if len(worse) == len(scored) else _listed(worse, labels)
        parts.append(f"below the untrained model (same config, same seed) on {where}: "
                     "pre-training made it worse")
    return "; ".join(parts) + "."


def verdict_lines(model: Dict[str, float], baselines: Dict[str, dict], chance: Dict[str, float],
                  labels: Optional[Dict[str, str]] = None, names: Optional[Dict[str, str]] = None,
                  chance_notes: Optional[Dict[str, str]] = None, subject: str = "the model") -> List[str]:
    """The first lines of a Markdown result file: the verdict, the chance level of each
    metric, the best baseline of each metric."""
    labels, names, notes = labels or {}, names or {}, chance_notes or {}
    best = best_baselines(baselines, [m for m in chance if model.get(m) is not None])
    text = verdict(model, baselines, chance, labels, names, subject)
    return [f"**Does it work?** {text[0].upper() + text[1:]}", "",
            "Chance: " + "; ".join(f"{labels.get(m, m)} {v:.3f}" + (f" ({notes[m]})" if m in notes else "")
                                   for m, v in chance.items()) + ".",
            "Best baseline: " + ("; ".join(f"{labels.get(m, m)}: {names.get(b, b)} ({v:.3f})"
                                            for m, (b, v) in best.items()) or "none ran") + ".", ""]
