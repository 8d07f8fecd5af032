#!/usr/bin/env bash
# The GPU suite in one command, on a machine with torch, triton and numpy only (no package
# registry, no DALI, no pip install needed):
#
#     bash bench/gpu.sh OUT
#
# 1. the kernel tests on CUDA (compiled Triton kernels, no interpreter; fp32, fp16, bf16),
# 2. bench_dma (authors' eager, reference, chunked, SDPA-lse, fused; infer, fwd, bwd, fwd+bwd;
#    bf16; the fused path is the one diagonal_micro_attention runs: training forward with E,
#    _dma_bwd_rows + _dma_bwd_dk), 3. the roofline report (bench_roofline: the H100 model of
#    every DMA kernel with bench_dma's medians beside its predictions),
# 4. bench_swap, 5. bench_train (micronbert_s8 at B=64 in bf16: authors, reference, fused,
#    fused + torch.compile; images/s, MFU), 6. the sm_90 compile report of this Triton,
# each table as OUT/<name>.{md,csv} (+ png where matplotlib is installed), the test log as
# OUT/tests.log, and everything packed as OUT/gpu_tables.tgz (the device tool brings back
# at most 8 files). Each step has its own time limit, so one slow step cannot eat the rest;
# the step limits add up to 8 min 50 s, under the device tool's 10-minute limit per call.
set -uo pipefail
OUT=${1:?usage: bash bench/gpu.sh OUT}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# the package without installing it: the checkout itself (micronbert/kernels/__init__.py finds the
# top-level kernels/ folder), first on the path for the benches as `python -m pytest` has it
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MICRONBERT_BENCH_OUT="$OUT"
unset TRITON_INTERPRET
cd "$ROOT"
"$PY" - <<'PY' | tee "$OUT/device.txt"
import torch, triton
assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA GPU"
print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
      f"cuda {torch.version.cuda}")
PY
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
"$PY" -c "import pytest, micronbert.kernels" || { echo "bench/gpu.sh: pytest or micronbert.kernels cannot be imported" >&2; exit 1; }
status=0
step() {  # step SECONDS NAME CMD...: run with a time limit, log, keep going
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ $rc = 0 ] || { status=1; tail -20 "$OUT/$name.log"; }
}
step 120 tests "$PY" -m pytest -q -p no:cacheprovider tests/test_dma.py tests/test_swap.py \
  tests/test_compile.py tests/test_foreign_vit.py tests/test_model.py tests/test_roofline.py -k "not dali"
step 120 bench_dma "$PY" bench/bench_dma.py --dtype bf16
step 20 roofline "$PY" bench/bench_roofline.py --measured "$OUT/bench_dma.csv"
step 40 bench_swap "$PY" bench/bench_swap.py
step 150 bench_train "$PY" bench/bench_train.py --batches 64
step 80 bench_compile_sm90 "$PY" bench/bench_compile_sm90.py
tar czf "$OUT/gpu_tables.tgz" -C "$OUT" --exclude gpu_tables.tgz .
echo "tables in $OUT (packed: $OUT/gpu_tables.tgz)"
exit $status
