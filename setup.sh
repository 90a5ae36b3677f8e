#!/usr/bin/env bash
# Make .venv with the project's requirements (once) and the kit installed in it (editable: `python -m src` works
# from any folder). `bash setup.sh --dev` adds test/lint tools; EXTRAS=qlora,wandb,kaggle adds optional packages
# (pyproject.toml's extras). On a machine whose python already has the requirements (Colab, Kaggle, a pod image),
# set USE_SYSTEM_PYTHON=1.
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
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)${1:+-dev}${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ]; then
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # No GPU: the CPU build (a local wheel on the project machines; PyPI elsewhere).
    if command -v nvidia-smi >/dev/null 2>&1; then .venv/bin/pip install -q "torch>=2.3"
    else .venv/bin/pip install -q ${TORCH_SPEC:-torch==2.13.0}; fi  # word-split on purpose
  fi
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  if [ -n "$EXTRAS" ]; then .venv/bin/pip install -q -e ".[$EXTRAS]"; fi
  if [ "${1:-}" = "--dev" ]; then .venv/bin/pip install -q -r requirements-dev.txt; fi
  touch "$stamp"
fi
