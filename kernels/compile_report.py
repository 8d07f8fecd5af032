"""Compile the shipped Triton kernels for a named GPU target without a GPU.

``compile_all(arch=90)`` compiles every shipped configuration of the DMA and swap
kernels for ``GPUTarget("cuda", arch, 32)`` in fp16 and bf16, and reads the
cubin with the ``cuobjdump`` that ships inside Triton's wheel: registers,
shared memory, local memory and stack per kernel, and whether the SASS uses
Hopper's warpgroup tensor-core instructions (HGMMA). Nothing here needs CUDA.
Run ``python -m micronbert.kernels.compile_report`` for the table. The DMA kernels are
compiled as a launch on contiguous inputs specialises them (unit head-dim strides, 16-byte
aligned pointers and row strides), which is what runs at every shape of the roofline
(``roofline.py``: the cost model of the DMA routes).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import dma_triton, swap_triton

_TY = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32", "u8": "*u8"}


@dataclass
class KernelReport:
    kernel: str
    dtype: str
    head_dim: int
    block_m: int
    block_n: int
    block_d: int
    block_dv: int
    num_warps: int
    num_stages: int
    registers: int
    shared_bytes: int
    local_bytes: int
    stack_bytes: int
    hgmma: int
    hmma: int

    @property
    def spills(self) -> bool:
        return self.local_bytes > 0 or self.stack_bytes > 0


def cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _inspect(compiled):
    """(registers, shared bytes (static + Triton's dynamic), local, stack, #HGMMA, #HMMA)."""
    cubin, dyn_shared = compiled
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        res = subprocess.run([cuobjdump(), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([cuobjdump(), "-sass", path], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.remove(path)

    def field(name):
        m = re.search(rf"\b{name}:(\d+)", res)
        return int(m.group(1)) if m else 0
    return (field("REG"), field("SHARED") + dyn_shared, field("LOCAL"), field("STACK"),
            len(re.findall(r"\bHGMMA\b", sass)), len(re.findall(r"\bHMMA\b", sass)))


# What a real launch specialises (triton's JIT does it from the arguments): pointers and
# integers divisible by 16 carry tt.divisibility=16, integers equal to 1 become constants.
# Contiguous (B, H, N, d) inputs with d a multiple of 16 (every shape of the roofline) and the
# contiguous (B, H, N) row vectors that dma.py passes: head-dim strides and row-vector strides
# are 1, row/head/batch strides and the head dim divisible by 16.
_UNIT_STRIDE = re.compile(r"^s[a-z]{1,2}d$|^s[bgn]n$")  # sqd, skd, svd, sod; sbn, sgn, snn
_DIV16 = re.compile(r"^s[a-z]{1,2}[bhn]$|^DIM$")


def _launch_specialisation(fn, signature):
    consts, attrs = {}, {}
    for name, ty in signature.items():
        if ty.startswith("*"):
            attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
        elif _UNIT_STRIDE.match(name):
            consts[name] = 1
        elif _DIV16.match(name):
            attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
    return consts, attrs


def _compile(fn, signature, constexprs, arch, num_warps, num_stages, specialise=False):
    sig = dict(signature)
    attrs = {}
    if specialise:
        unit, attrs = _launch_specialisation(fn, signature)
        constexprs = {**unit, **constexprs}
    for k in constexprs:
        sig[k] = "constexpr"
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)
    return ck.asm["cubin"], int(getattr(ck.metadata, "shared", 0))


def _dma_signature(fn, dtype):
    sig = {}
    for name in fn.arg_names:
        if name in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV", "E"):
            sig[name] = _TY[dtype]
        elif name[0].isupper() and not name.isupper() or name in ("LSE", "W", "DB", "DD", "Dg",
                                                                  "Bias", "Gate", "DGATE", "Null"):
            sig[name] = "*fp32"
        elif name == "scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def dma_variants():
    """(report name, CONFIGS key, kernel, extra constexprs): every shipped kernel, the forward
    with and without E (inference and training)."""
    k = dma_triton
    return [("_dma_fwd", "fwd", k._dma_fwd, {"SAVE_E": False}),
            ("_dma_fwd[E]", "fwd", k._dma_fwd, {"SAVE_E": True}),
            ("_dma_bwd_rows", "bwd_rows", k._dma_bwd_rows, {}),
            ("_dma_bwd_dk", "bwd_dk", k._dma_bwd_dk, {})]


def compile_dma(arch=90, dtypes=("fp16", "bf16"), head_dims=None):
    out = []
    for dtype in dtypes:
        for report_name, name, fn, extra in dma_variants():
            for hd, (bm, bn, bd, bdv, warps, stages) in sorted(dma_triton.CONFIGS[name].items()):
                if head_dims is not None and hd not in head_dims:
                    continue
                sig = {k: v for k, v in _dma_signature(fn, dtype).items()
                       if k not in _constexpr_names(fn)}
                consts = dict(HEAD_DIM=hd, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv, HAS_BIAS=True, HAS_GATE=True,
                              HAS_NULL=True, HAS_DD=True, UPCAST=False, PRECISION="tf32", **extra)
                consts = {k: v for k, v in consts.items() if k in fn.arg_names}
                cubin = _compile(fn, sig, consts, arch, warps, stages, specialise=True)
                out.append(KernelReport(report_name, dtype, hd, bm, bn, bd, bdv, warps, stages,
                                        *_inspect(cubin)))
    return out


def _constexpr_names(fn):
    return {fn.arg_names[p.num] for p in fn.params if p.is_constexpr}


def compile_swap(arch=90, patch_sizes=(8, 16)):
    fn = swap_triton._swap_fwd
    out = []
    for p in patch_sizes:
        for src, dst in (("u8", "fp16"), ("u8", "bf16"), ("fp32", "fp32")):
            block_p, block_e = swap_triton.block_sizes(p * p * 3, (224 // p) ** 2)
            sig = {}
            for name in fn.arg_names:
                if name in ("A", "B"):
                    sig[name] = _TY[src]
                elif name in ("OutS", "OutA", "OutB"):
                    sig[name] = _TY[dst]
                elif name == "Mask":
                    sig[name] = "*u8"
                elif name in ("Mean", "Std"):
                    sig[name] = "*fp32"
                elif name not in _constexpr_names(fn):
                    sig[name] = "i32"
            consts = dict(P=p, BLOCK_P=block_p, BLOCK_E=block_e, IS_UINT8=src == "u8",
                          HAS_MEAN=True, HAS_STD=True, WRITE_A=True, WRITE_B=True)
            cubin = _compile(fn, sig, consts, arch, 4, 1)
            out.append(KernelReport("_swap_fwd", f"{src}->{dst}", p, block_p, block_e, 0, 0, 4, 1,
                                    *_inspect(cubin)))
    return out


def compile_all(arch=90):
    return compile_dma(arch) + compile_swap(arch)


def markdown(reports) -> str:
    cols = list(asdict(reports[0])) + ["spills"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in reports:
        lines.append("| " + " | ".join(str(v) for v in list(asdict(r).values()) + [r.spills]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90 (GPUTarget('cuda', 90, 32))")
    print(markdown(compile_all()))
    print("\nshared_bytes = static + dynamic (Triton's pipelining buffers); spills = local or stack > 0")
