"""The H100 roofline model of every DMA route (the fused kernels from their launch table,
the fused backward before issue 16, the authors' eager route, SDPA with its log-sum-exp):
executed vs essential tensor-core work, HBM bytes, predicted time, no GPU needed
(``bench/bench_roofline.py`` writes it; ``ROOFLINE_NOTES`` says how it is made). The SASS
of the kernels themselves is ``compile_report.py``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

import triton

from . import dma_triton

# Spec-sheet peaks, ASSUMPTIONS (no GPU of this project has measured them): (name as in
# torch.cuda.get_device_name(), dense bf16 tensor-core TFLOP/s, HBM TB/s). The one source of
# peak figures: the roofline predicts with the H100 SXM's, and bench/ reports fractions of these
# beside the rates it measures itself (bench/common.py).
SPEC_SHEET = (("H100 PCIe", 756.0, 2.0), ("H100 NVL", 835.0, 3.9), ("H100", 989.0, 3.35),
              ("H200", 989.0, 4.8), ("A100", 312.0, 2.039))
_, PEAK_TFLOPS, PEAK_TBPS = next(r for r in SPEC_SHEET if r[0] == "H100")  # the SXM part
# Not in the max: the special-function units' exp rate (FlashAttention-3's H100 SXM figure,
# 3.9 T/s), reported beside it, since at d = 64 a score's exp costs about as much as its GEMM.
PEAK_TEXP = 3.9
# (B, H, N, d): the authors' micronbert_s8 DMA; a ViT-B's heads at 224 px / patch 8 and 16
ROOFLINE_SHAPES = [(64, 1, 784, 512), (64, 12, 785, 64), (64, 12, 3137, 64)]
# The launch table on main before issue 16 (commit 667416d), for the "before" rows: the
# backward recomputed the scores in every head-dim split of _dma_bwd_dq and _dma_bwd_dk.
BEFORE_CONFIGS = {
    "fwd": dma_triton.CONFIGS["fwd"],
    "bwd_dq": {16: (64, 64, 16, 16, 4, 2), 32: (64, 64, 32, 32, 4, 2), 64: (64, 64, 64, 64, 8, 2),
               128: (64, 64, 64, 64, 8, 2), 256: (64, 64, 64, 64, 8, 2), 512: (64, 64, 64, 64, 8, 2)},
    "bwd_dk": {16: (64, 64, 16, 16, 4, 2), 32: (64, 64, 32, 32, 4, 2), 64: (64, 64, 64, 64, 8, 2),
               128: (64, 64, 64, 128, 8, 2), 256: (64, 64, 64, 128, 8, 2), 512: (64, 64, 64, 128, 8, 2)},
}
MODES = ("infer", "fwd", "bwd", "fwd+bwd")  # infer: no autograd; fwd: the training forward


@dataclass
class Step:
    """One kernel (or one eager op) of a route: executed tensor-core FLOPs, HBM bytes, and
    the essential GEMM work its outputs need (in N^2 d units, once each, unpadded)."""
    name: str
    flops: float
    bytes: float
    essential_units: float = 0.0
    exps: float = 0.0

    @property
    def ms(self) -> float:  # roofline: compute and memory overlap within a kernel
        return max(self.flops / (PEAK_TFLOPS * 1e9), self.bytes / (PEAK_TBPS * 1e9))


def unit_flops(b, h, n, d) -> float:
    """One N x N x d GEMM over every (batch, head): 2 B H N^2 d FLOPs."""
    return 2.0 * b * h * n * n * d


def executed_exps(kernel, b, h, n, d, configs=None) -> float:
    """exp() calls of one launch: one per element of every score tile (padding included)."""
    if kernel == "bwd_rows":
        return 0.0
    plan = dma_triton.launch_plan(kernel, b, h, n, d, configs)
    c, programs = plan["consts"], 1
    for g in plan["grid"]:
        programs *= g
    return float(programs * triton.cdiv(n, c["BLOCK_N"]) * c["BLOCK_M"] * c["BLOCK_N"])


def executed_flops(kernel, b, h, n, d, save_e=True, configs=None) -> float:
    """Tensor-core FLOPs of one launch: programs (the grid) x the dots each makes (loops and
    tl.dot shapes, padded blocks included), from the launch table the launchers use."""
    plan = dma_triton.launch_plan(kernel, b, h, n, d, configs)
    programs = 1
    for g in plan["grid"]:
        programs *= g
    work = dma_triton.dot_work("bwd_dk" if kernel == "bwd_dq" else kernel, plan, n, save_e)
    return programs * sum(2.0 * m * nn * k * calls for m, nn, k, calls in work)


def _fused_steps(b, h, n, d, es, mode, before=False):
    """Kernels of the fused route (``before``: main's before issue 16) in ``mode``, with
    their compulsory HBM bytes: every tensor read or written once (a (batch, head)'s K and Q,
    at most 785 x 512 x 2 bytes, stay in the 50 MB L2 while its programs run); no PoI
    inputs (bias, gate, null: +4 bytes a row each)."""
    bh, nd, row = b * h, n * d * es, n * 4
    cfg = BEFORE_CONFIGS if before else None
    save_e = not before and mode != "infer"
    fwd = Step("_dma_fwd[E]" if save_e else "_dma_fwd", executed_flops("fwd", b, h, n, d, save_e, cfg),
               bh * (4 * nd + 2 * row + (nd if save_e else 0)), 2 if save_e else 1,
               executed_exps("fwd", b, h, n, d, cfg))
    if before:
        bwd = [Step("_dma_bwd_dq", executed_flops("bwd_dq", b, h, n, d, configs=cfg),
                    bh * (6 * nd + 3 * row), 2, executed_exps("bwd_dq", b, h, n, d, cfg)),  # q k v dO, lse D -> dq dv, W
               Step("_dma_bwd_dk", executed_flops("bwd_dk", b, h, n, d, configs=cfg),
                    bh * (3 * nd + 2 * row), 2, executed_exps("bwd_dk", b, h, n, d, cfg))]  # q k, lse W -> dk
    else:
        bwd = [Step("_dma_bwd_rows", 0.0, bh * (3 * nd + 2 * row)),  # dO v, D -> dv, W
               Step("_dma_bwd_dk", executed_flops("bwd_dk", b, h, n, d),
                    bh * (5 * nd + 2 * row), 2, executed_exps("bwd_dk", b, h, n, d))]  # q k E, lse W -> dk dq
    return {"infer": [fwd], "fwd": [fwd], "bwd": bwd, "fwd+bwd": [fwd] + bwd}[mode]


def _eager_steps(b, h, n, d, es, mode):
    """The authors' eager route (bench_dma.eager_authors: full scores, softmax, diagonal)
    and its autograd backward, op by op; each N x N tensor in the inputs' dtype."""
    bh, nd, nn_, u = b * h, n * d * es, n * n * es, unit_flops(b, h, n, d)
    fwd = [Step("q @ k^T", u, bh * (2 * nd + nn_), 1), Step("* scale", 0.0, bh * 2 * nn_),
           Step("softmax", 0.0, bh * 2 * nn_, 0, bh * n * n), Step("diag * v", 0.0, bh * (2 * nd + n * es))]
    bwd = [Step("dv, d(diag)", 0.0, bh * 7 * nd),  # dv = diag dO; d(diag) = sum(dO * v)
           Step("diagonal backward", 0.0, bh * nn_),  # zeros N x N, diagonal filled
           Step("softmax backward", 0.0, bh * 3 * nn_), Step("* scale backward", 0.0, bh * 2 * nn_),
           Step("dq = dS k", u, bh * (nn_ + 2 * nd), 1), Step("dk = dS^T q", u, bh * (nn_ + 2 * nd), 1)]
    return {"infer": fwd, "fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def _sdpa_lse_steps(b, h, n, d, es, mode):
    """bench_dma.sdpa_lse: memory-efficient attention with its log-sum-exp (S and P v: two
    units, flash style), then D from the lse and O = D v, op by op in fp32. Forward only:
    SDPA's backward takes no gradient through the lse."""
    if mode not in ("infer", "fwd"):
        return None
    bh, nd, nd4 = b * h, n * d * es, n * d * 4
    return [Step("sdpa (efficient, lse)", 2 * unit_flops(b, h, n, d), bh * (4 * nd + n * 4), 1, bh * n * n),
            Step("s_ii = <q, k> (fp32)", 0.0, bh * (2 * (nd + nd4) + 3 * nd4 + nd4)),
            Step("O = exp(s_ii - lse) v", 0.0, bh * ((nd + nd4) + 2 * nd4 + (nd4 + nd)))]


ROUTES = {"fused": lambda *a: _fused_steps(*a),
          "fused_before": lambda *a: _fused_steps(*a, before=True),
          "authors_eager": _eager_steps, "sdpa_lse": _sdpa_lse_steps}
ESSENTIAL_UNITS = {"infer": 1, "fwd": 1, "bwd": 3, "fwd+bwd": 4}  # S; S again, P k, P^T (W q)


def essential(b, h, n, d, es, mode):
    """(FLOPs, bytes) the operation needs: the GEMMs once at the true N, and its inputs read
    and outputs written once (fwd: q k v -> O D (+ lse when training); bwd: q k v dO lse D ->
    dq dk dv)."""
    bh, nd, row = b * h, n * d * es, n * 4
    fwd = 4 * nd + (1 if mode == "infer" else 2) * row
    bwd = 7 * nd + 2 * row
    by = {"infer": fwd, "fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]
    return ESSENTIAL_UNITS[mode] * unit_flops(b, h, n, d), bh * by


def roofline(shapes=ROOFLINE_SHAPES, es=2, measured=None):
    """Rows of the roofline report: per shape, route and mode a ``total`` row and (fused
    routes) a row per kernel. ``measured``: {(provider, B, H, N, d, mode): ms} from a GPU run
    of bench_dma (provider names as there), put beside the prediction."""
    provider = {"fused": "fused_triton", "authors_eager": "authors_eager", "sdpa_lse": "library_sdpa_lse"}
    rows = []
    for b, h, n, d in shapes:
        u = unit_flops(b, h, n, d)
        eager_ms = {m: sum(s.ms for s in _eager_steps(b, h, n, d, es, m)) for m in MODES}
        for route, fn in ROUTES.items():
            for mode in MODES:
                steps = fn(b, h, n, d, es, mode)
                if steps is None:
                    continue
                ef, eb = essential(b, h, n, d, es, mode)
                ess_ms = max(ef / (PEAK_TFLOPS * 1e9), eb / (PEAK_TBPS * 1e9))
                ms = sum(s.ms for s in steps)
                m_ms = (measured or {}).get((provider.get(route), b, h, n, d, mode))
                kernel_rows = steps if route.startswith("fused") else []
                for s in kernel_rows + [Step("total", sum(s.flops for s in steps),
                                             sum(s.bytes for s in steps), ESSENTIAL_UNITS[mode],
                                             sum(s.exps for s in steps))]:
                    total = s.name == "total"
                    rows.append({
                        "B": b, "H": h, "N": n, "d": d, "route": route, "mode": mode, "kernel": s.name,
                        "executed_units": round(s.flops / u, 3),
                        "essential_units": s.essential_units,
                        "recompute": round(s.flops / (s.essential_units * u), 3) if s.essential_units else None,
                        "executed_gflop": round(s.flops / 1e9, 2),
                        "hbm_mb": round(s.bytes / 1e6, 1),
                        "essential_mb": round(eb / 1e6, 1) if total else None,
                        "bound": "compute" if s.flops / (PEAK_TFLOPS * 1e9) >= s.bytes / (PEAK_TBPS * 1e9) else "memory",
                        "predicted_ms": round(ms if total else s.ms, 4),
                        "exp_ms": round(s.exps / (PEAK_TEXP * 1e9), 4),
                        "essential_ms": round(ess_ms, 4) if total else None,
                        "vs_essential": round(ms / ess_ms, 2) if total else None,
                        "speedup_vs_eager": round(eager_ms[mode] / ms, 2) if total else None,
                        "measured_ms": (round(m_ms, 4) if m_ms is not None else None) if total else None,
                    })
    return rows


def read_measured(csv_path) -> dict:
    """{(provider, B, H, N, d, mode): median_ms} from a bench_dma.csv."""
    import csv
    out = {}
    with open(csv_path) as f:
        for r in csv.DictReader(f):
            if r.get("median_ms") not in (None, "", "None"):
                out[(r["provider"], int(r["B"]), int(r["H"]), int(r["N"]), int(r["d"]), r["mode"])] = \
                    float(r["median_ms"])
    return out


ROOFLINE_NOTES = f"""How the numbers are made (kernels/roofline.py, no GPU):
- executed FLOPs: tensor-core work of each launch = programs in its grid x the tl.dot calls
  each program makes (its key/query loop of cdiv(N, BLOCK_N) trips, the head dim in BLOCK_D
  chunks), padded blocks included, from the launch table the launchers use
  (dma_triton.launch_plan / dot_work; tests check it against a hand count and against the
  dots the interpreter executes). A unit is one N x N x d GEMM over all (batch, head)s.
- essential: the GEMMs the operation needs once each at the true N (inference 1 unit:
  S; fwd+bwd 4: S, S again in the backward, P k, P^T (W q); bwd alone 3), and its inputs
  read and outputs written once. recompute = executed / essential units.
- HBM bytes: compulsory traffic, every tensor once (a (batch, head)'s K and Q stay in L2
  while its programs run); eager: each op reads its inputs and writes its output, N x N
  tensors in the inputs' dtype (bf16, 2 bytes).
- predicted time = sum over kernels (or eager ops) of max(FLOPs / {PEAK_TFLOPS:g} TFLOP/s,
  bytes / {PEAK_TBPS:g} TB/s): the H100 SXM's spec-sheet bf16 dense and HBM peaks (assumed,
  not measured); no launch
  overheads, tails or wave quantisation. exp_ms: the score exponentials alone at
  {PEAK_TEXP:g} T exp/s (special-function units; FlashAttention-3's H100 figure), not in the
  max: where it comes near predicted_ms (d = 64), the exps, not the GEMMs, set the pace.
  essential_ms: the same max over the essential FLOPs and bytes of the whole mode.
- modes: infer = forward without autograd; fwd = the training forward (fused: also E = k - P k);
  bwd; fwd+bwd. fused_before = main before issue 16 (backward recomputing S per head-dim split).
- measured_ms: bench_dma's median on a GPU when bench/gpu.sh ran (n/a otherwise).
"""


def roofline_markdown(rows) -> str:
    return markdown_rows(rows) + "\n\n" + ROOFLINE_NOTES


def markdown_rows(rows) -> str:
    cols = list(rows[0])
    fmt = lambda v: "n/a" if v is None else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                     ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])
