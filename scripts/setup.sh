#!/usr/bin/env bash
# Creates the project's virtual environment (.venv, or $VENV) and installs tune-eegpt into it
# with the PyTorch build that fits the machine. Safe to run again: it only adds what is missing.
#
#   no NVIDIA GPU  -> torch==$TORCH_VERSION, CPU build. On this project's machines pip finds the
#                     CPU wheel locally; elsewhere set TORCH_INDEX_URL to a CPU wheel index.
#   NVIDIA GPU     -> torch==$TORCH_VERSION from the default index (a CUDA build on Linux x86_64).
#
# torch is installed first, so that the project's loose "torch>=2.4" requirement is already
# met and pip never swaps in a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
EXTRAS="${EXTRAS:-dev}"

if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; installing torch==$TORCH_VERSION (CUDA build)"
    pip_install "torch==$TORCH_VERSION"
  elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "setup: no GPU; installing torch==$TORCH_VERSION from $TORCH_INDEX_URL"
    pip_install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
  else
    echo "setup: no GPU; installing torch==$TORCH_VERSION (CPU build)"
    pip_install "torch==$TORCH_VERSION"
  fi
fi

needs_install=0
"$PY" -c "import tune_eegpt, ray.tune, optuna, mne, edfio" 2>/dev/null || needs_install=1
if [ "$EXTRAS" = dev ]; then
  "$PY" -c "import pytest, nbclient, ipykernel" 2>/dev/null || needs_install=1
  [ -x "$VENV/bin/ruff" ] || needs_install=1
fi
if [ "$needs_install" = 1 ]; then
  echo "setup: installing tune-eegpt[$EXTRAS] and its dependencies"
  pip_install -e ".[$EXTRAS]"
fi
"$PY" -c "import torch; print(f'setup: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
