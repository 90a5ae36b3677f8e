#!/usr/bin/env bash
# Check requirements.txt's floors: a venv with every `pkg>=X` pinned to exactly X (torch: the CPU wheel), then the
# tests of the training, model and prediction paths on it. A floor that fails here is too low: raise it.
#   bash bench/floors.sh [pytest args]      # default: tests/test_train.py tests/test_transformer.py tests/test_predict.py
set -euo pipefail
cd "$(dirname "$0")/.."
V=${FLOORS_VENV:-.venv-floors}
[ -x "$V/bin/python" ] || python3 -m venv "$V"
pins=$(sed -E 's/#.*//; s/[[:space:]]+$//' requirements.txt | grep -v '^torch' | grep . | sed -E 's/>=/==/')
"$V/bin/pip" install -q ${TORCH_SPEC:-torch==2.13.0}
# shellcheck disable=SC2086
"$V/bin/pip" install -q $pins pytest
"$V/bin/pip" list 2>/dev/null | grep -iE '^(torch|transformers|peft|accelerate|numpy|pandas|scikit-learn) '
if [ $# -eq 0 ]; then set -- tests/test_train.py tests/test_transformer.py tests/test_predict.py; fi
OMP_NUM_THREADS=1 "$V/bin/python" -m pytest -q -p no:cacheprovider "$@"
