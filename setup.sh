#!/usr/bin/env bash
# Make .venv with the project's requirements (once) and the kit installed in it (editable: `python -m src` works
# from any folder). `bash setup.sh --dev` adds test/lint tools; EXTRAS=qlora,wandb,kaggle adds optional packages
# (pyproject.toml's extras). On a machine whose python already has the requirements (Colab, Kaggle, a pod image),
# set USE_SYSTEM_PYTHON=1. Torch: TORCH_SPEC (pip arguments, e.g. "torch<2.15 --index-url URL") when set, replacing
# any torch already in .venv; else PyPI's CUDA build where nvidia-smi exists, PyTorch's CPU build elsewhere.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-}
case "$EXTRAS" in *[!a-z,]*)
  echo "error: EXTRAS must be names from pyproject.toml like qlora,wandb,kaggle, got '$EXTRAS'" >&2; exit 2;;
esac
if [ "${USE_SYSTEM_PYTHON:-0}" = 1 ]; then
  "$PY" -m pip install -q -r requirements.txt ${1:+-r requirements-dev.txt}
  if [ -n "$EXTRAS" ]; then "$PY" -m pip install -q ".[$EXTRAS]"; fi
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
TORCH_SPEC=${TORCH_SPEC:-}
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)${1:+-dev}\
${EXTRAS:+-$EXTRAS}${TORCH_SPEC:+-torch$(printf %s "$TORCH_SPEC" | cksum | cut -d' ' -f1)}"
if [ ! -f "$stamp" ]; then
  if [ -n "$TORCH_SPEC" ]; then  # the torch asked for (e.g. one built for this driver or card), replacing any other
    .venv/bin/pip install -q --force-reinstall --no-deps $TORCH_SPEC  # word-split on purpose
    .venv/bin/pip install -q $TORCH_SPEC
  elif ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then .venv/bin/pip install -q "torch>=2.3"  # PyPI's CUDA build
    else  # no GPU: PyTorch's CPU build (not PyPI's multi-GB CUDA one), then its dependencies from PyPI
      .venv/bin/pip install -q --retries 0 --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
      .venv/bin/pip install -q torch==2.13.0
    fi
  fi
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  if [ -n "$EXTRAS" ]; then .venv/bin/pip install -q -e ".[$EXTRAS]"; fi
  if [ "${1:-}" = "--dev" ]; then .venv/bin/pip install -q -r requirements-dev.txt; fi
  touch "$stamp"
fi
