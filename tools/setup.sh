#!/usr/bin/env bash
# Set up .venv for micronbert on a fresh machine, idempotently.
#   bash tools/setup.sh         the package and what the `micronbert` command needs ([cli])
#   bash tools/setup.sh test    also the test stack ([test]: pytest, DALI, transformers, ...)
#   bash tools/setup.sh lean    only torch, triton and numpy (the drop-in ops and the model)
# - A torch that the calling python already has (e.g. a CUDA build on a GPU box) is kept:
#   the venv then sees the system site-packages.
# - Otherwise torch==2.13.0 is installed (on the project's CPU machines: the local CPU
#   build, never a multi-GB CUDA download), with the Triton it pairs with.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA=${1:-cli}
case "$EXTRA" in cli|test|lean) ;; *) echo "usage: bash tools/setup.sh [cli|test|lean]" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
PIP=".venv/bin/python -m pip -q --disable-pip-version-check"
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install torch==2.13.0
if ! .venv/bin/python -c "import triton" 2>/dev/null; then
  # the version from the package metadata: `import torch` before numpy is installed (a
  # fresh venv) prints "Failed to initialize NumPy"
  case "$(.venv/bin/python -c 'from importlib.metadata import version; print(version("torch"))')" in
    2.13.*) $PIP install triton==3.7.1 ;;
    *) $PIP install "triton>=3.6" ;;
  esac
fi
if [ "$EXTRA" = lean ]; then $PIP install -e .; else $PIP install -e ".[$EXTRA]"; fi
.venv/bin/python -c "import micronbert, torch, triton; print(f'micronbert {micronbert.__version__}, torch {torch.__version__}, triton {triton.__version__}')"
