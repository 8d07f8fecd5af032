#!/usr/bin/env bash
# The GPU suite in one command, on a machine with torch, triton, numpy, OpenCV and pytest (no
# package registry, no DALI, no pip install needed):
#
#     bash bench/gpu.sh OUT               # on a CUDA machine (one device call: < 10 min)
#     bash bench/gpu.sh --cpu-check OUT   # every step at tiny sizes on the CPU (tests/test_gpu_sh.py)
#
# Steps, each with its own time limit (one slow step cannot eat the rest; the limits add up to
# 9 min 10 s, under the device tool's 10-minute call), each step's log as OUT/<step>.log:
#  1. tests: the kernel tests on CUDA (compiled Triton kernels, no interpreter; fp32, fp16, bf16),
#     run from the root with PYTHONPATH=root, so the package under test is this checkout (with
#     kernels/); --cpu-check: their collection only (every module imports);
#  2. bench_dma (authors' eager, reference, chunked, SDPA-lse, fused; infer, fwd, bwd, fwd+bwd;
#     bf16; the fused path is the one diagonal_micro_attention runs),
#  3. roofline (bench_roofline: the H100 model of every DMA kernel, bench_dma's medians beside),
#  4. bench_swap, 5. bench_train (micronbert_s8 at B=64 in bf16: authors, reference, fused,
#     fused + torch.compile; images/s, frac_gemm, mfu_spec),
#  6. bench_compile_sm90 (the sm_90 compile report of this Triton),
#  7. bench_loader (the CLI's pretrain loader, 256 px synthetic JPEG clips, B=32; the --dali rows
#     are skipped with a note where DALI cannot be imported: the GPU image has none),
#  8. bench_spot (--quick: scorer frames/s of micronbert_tiny and micronbert_s8 at B 64 and 256,
#     the flow baseline, end to end on a 5 s synthetic video),
#  9. finetune: `micronbert finetune` of micronbert_s8 (bf16 autocast) on a synthetic set of
#     2 subjects x 3 clips per class: LOSO = 2 folds of 20 epochs each, no baselines; the
#     per-epoch wall times are in OUT/finetune.log, the scores in OUT/finetune/ (a speed
#     check of the fine-tuning path, not a result: random init, synthetic data).
# Steps 7-9 need micronbert[data] (pandas, PyAV, OpenCV, Pillow, SciPy, scikit-image, tqdm): where
# the machine lacks one, the step is skipped with a line naming it (OUT/<step>.log), not failed.
# bench_dma, bench_train and bench_spot measure the GPU's own bf16 GEMM rate and copy bandwidth in
# the same run (frac_gemm; mfu_spec is over the spec sheet's peak, an assumption: common.SPEC_SHEET).
# Every bench writes its rows as it measures them (a time limit loses one row, not a table):
# OUT/<name>.{md,csv} (+ png with matplotlib), all packed as OUT/gpu_tables.tgz.
set -uo pipefail
CHECK=0
if [ "${1:-}" = "--cpu-check" ]; then CHECK=1; shift; fi
OUT=${1:?usage: bash bench/gpu.sh [--cpu-check] OUT}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# the package without installing it: the checkout itself (micronbert/kernels/__init__.py finds the
# top-level kernels/ folder), first on the path for the benches as `python -m pytest` has it
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" MICRONBERT_BENCH_OUT="$OUT"
unset TRITON_INTERPRET
# --cpu-check: the CPU only, one thread each (a smoke test on a shared machine: no spinning threads)
[ $CHECK = 1 ] && export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
cd "$ROOT"
"$PY" - "$CHECK" <<'PY' | tee "$OUT/device.txt"
import platform, sys, torch, triton
if sys.argv[1] == "1":
    print(f"cpu-check on {platform.machine()}, torch {torch.__version__}, triton {triton.__version__}")
else:
    assert torch.cuda.is_available(), "bench/gpu.sh needs a CUDA GPU (or --cpu-check)"
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"cuda {torch.version.cuda}")
PY
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
"$PY" -c "import pytest, micronbert.kernels, micronbert; assert micronbert.__file__.startswith('$ROOT/'), micronbert.__file__" \
  || { echo "bench/gpu.sh: pytest or this checkout's micronbert.kernels cannot be imported" >&2; exit 1; }
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
missing() {  # missing MODULE...: those this python cannot import, space-separated (none: empty)
  "$PY" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' "$@"
}
needs() {  # needs "MODULE..." SECONDS NAME CMD...: a step, skipped (said, not failed) without its modules
  local miss; miss=$(missing $1); shift
  if [ -n "$miss" ]; then echo "== $2: skipped, this python has no $miss" | tee "$OUT/$2.log"; else step "$@"; fi
}
DATA="pandas av cv2 PIL scipy skimage tqdm"  # micronbert[data]: the loader, spotting, fine-tuning
pick() { if [ $CHECK = 1 ]; then echo "$2"; else echo "$1"; fi; }  # pick GPU_FLAGS CPU_CHECK_FLAGS
TESTS="tests/test_dma.py tests/test_swap.py tests/test_compile.py tests/test_foreign_vit.py tests/test_model.py tests/test_roofline.py"
FT=$(mktemp -d)
trap 'rm -rf "$FT"' EXIT
# shellcheck disable=SC2046,SC2086  # flags split on purpose
{
step 100 tests "$PY" -m pytest -q -p no:cacheprovider $TESTS -k "not dali" $(pick "" "--collect-only")
step 100 bench_dma "$PY" bench/bench_dma.py --dtype $(pick bf16 fp32) $(pick "" --tiny)
step 15 roofline "$PY" bench/bench_roofline.py --measured "$OUT/bench_dma.csv"
step 25 bench_swap "$PY" bench/bench_swap.py --batches $(pick "16 64 256" 1)
step 120 bench_train "$PY" bench/bench_train.py --batches $(pick 64 1) \
  $(pick "" "--model micronbert_tiny --routes authors reference fused --reps 1")
step 60 bench_compile_sm90 "$PY" bench/bench_compile_sm90.py $(pick "" --quick)
needs "$DATA" 35 bench_loader "$PY" bench/bench_loader.py $(pick "--batch 32 --batches 4 --repeats 1" \
  "--model micronbert_tiny --size 64 --batch 2 --batches 2 --repeats 1 --workers 1 --prefetch 1 --subjects 1 --no-dali")
needs "$DATA" 40 bench_spot "$PY" bench/bench_spot.py $(pick --quick --tiny)
needs "$DATA" 55 finetune bash -c "'$PY' -m micronbert.cli synth --out '$FT/data' --subjects 2 --clips-per-class $(pick 3 1) \
  && '$PY' -m micronbert.cli finetune --data '$FT/data' --dataset synthetic --out '$OUT/finetune' --overwrite --no-baselines \
  --model $(pick micronbert_s8 micronbert_tiny) --epochs $(pick 20 1)"
}
tar czf "$FT/gpu_tables.tgz" -C "$OUT" --exclude gpu_tables.tgz . && mv "$FT/gpu_tables.tgz" "$OUT/"
echo "tables in $OUT (packed: $OUT/gpu_tables.tgz)"
exit $status
