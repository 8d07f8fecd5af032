"""The motion benchmark: recognition classes defined by the motion itself, not by its place.

Each class is a kind and direction of a local deformation of the face, a Gaussian bump of
width sigma as in ``warp_region``: a shift up, down, left or right, or an expansion or a
contraction about the bump's centre (``MOTION_CLASSES``). The centre is drawn per clip,
uniformly over ``FACE_AREA`` and independently of the class, so where the motion is says
nothing of what it is. Every kind peaks at the clip's amplitude (px at the apex; 1-3 px at
nuisance ``none``, the level's ``amplitude`` above it). The ground-truth mask is, as for
the regions set, where the local displacement exceeds a quarter pixel: a disc for a shift,
a ring for expand/contract (the centre of a radial motion does not move).

``benchmark.json`` records the benchmark, the nuisance level, the seed, the classes and
every clip's centre, amplitude and sigma. The regions benchmark (``SYNTH_CLASSES``, one
fixed region per class, where place answers) is the set of earlier versions; its folders
carry no ``benchmark.json`` (``benchmark_of`` reads both).
"""
from __future__ import annotations

import json
import math
import os

import torch

BENCHMARKS = ("motion", "regions")  # synth's --benchmark; the first is the default

# bump * r / sigma peaks at r = sigma with exp(-1/2): RADIAL makes that peak 1 px per px of
# amplitude, as a shift's
RADIAL = math.exp(0.5)

# class -> (shift (dy, dx), linear ((a, b), (c, d)) or None), per px of amplitude, (y, x)
# with y down (``warp_region``)
MOTION_CLASSES = {
    "shift_up": ((-1.0, 0.0), None),
    "shift_down": ((1.0, 0.0), None),
    "shift_left": ((0.0, -1.0), None),
    "shift_right": ((0.0, 1.0), None),
    "expand": ((0.0, 0.0), ((RADIAL, 0.0), (0.0, RADIAL))),
    "contract": ((0.0, 0.0), ((-RADIAL, 0.0), (0.0, -RADIAL))),
}

# where the centres are drawn, (y, x) ranges as fractions of the face crop (lfw_subset's
# crops are the face). Any place the motion cannot reach is a place a location prior knows
# has none: with 64 px crops and 8 px patches the LOSO location prior scores map ROC-AUC
# 0.70 with a margin of 0.15, 0.61 with 0.10, 0.53 with 0.05 (docs/data.md)
FACE_AREA = ((0.05, 0.95), (0.05, 0.95))


def draw_motion(cls: str, g: torch.Generator, area=FACE_AREA):
    """A clip of class ``cls`` of ``MOTION_CLASSES`` at a centre drawn uniformly over
    ``area``: ((y, x) fractions of the crop, (dy, dx), linear), as ``synthetic_clip`` takes it."""
    r = torch.rand(2, generator=g).tolist()
    (y0, y1), (x0, x1) = area
    shift, linear = MOTION_CLASSES[cls]
    return (y0 + (y1 - y0) * r[0], x0 + (x1 - x0) * r[1]), shift, linear


def write_benchmark_json(out: str, benchmark: str, classes: dict, nuisance: str, seed: int, size: int,
                         infos) -> None:
    """``out/benchmark.json``: the benchmark, nuisance level, seed, frame size, classes,
    ``FACE_AREA`` and per clip its subject, clip, class, centre (y, x px), amplitude and
    sigma (px; ``synthetic_clip``'s ``info``)."""
    clips = [{"subject": i["subject"], "clip": i["clip"], "class": i["class"],
              "center_yx": [round(float(v), 3) for v in i["center"]],
              "amplitude": round(float(i["amplitude"]), 3), "sigma": round(float(i["sigma"]), 3)}
             for i in infos]
    meta = {"benchmark": benchmark, "nuisance": nuisance, "seed": seed, "size": size,
            "classes": {k: {"shift": v[0], "linear": v[1]} for k, v in classes.items()},
            "face_area": FACE_AREA, "clips": clips}
    with open(os.path.join(out, "benchmark.json"), "w") as f:
        json.dump(meta, f, indent=1)


def benchmark_of(root: str) -> str:
    """The benchmark that wrote the synthetic set ``root``: ``benchmark.json``'s, else
    ``regions`` (its sets, and those of earlier versions, carry none)."""
    path = os.path.join(root, "benchmark.json")
    if not os.path.exists(path):
        return "regions"
    with open(path) as f:
        return json.load(f)["benchmark"]
