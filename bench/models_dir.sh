#!/usr/bin/env bash
# The project machines have no model hub: fetch the offline copies (../shared/models/offline_models.py) and link
# them under their hub ids into one folder, the MODELS_DIR the configs' hub ids are read from (src/hub.py).
#   export MODELS_DIR=$(bash bench/models_dir.sh [NAME ...])    # default: every model the configs use
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OFFLINE=${OFFLINE_MODELS_PY:-../shared/models/offline_models.py}
DIR=${MODELS_DIR:-$HOME/.cache/models-dir}
declare -A HUB=(
  [minilm-l6]=sentence-transformers/all-MiniLM-L6-v2
  [mpnet-base]=sentence-transformers/all-mpnet-base-v2
  [smollm2-135m]=HuggingFaceTB/SmolLM2-135M-Instruct
  [qwen2.5-coder-0.5b]=Qwen/Qwen2.5-Coder-0.5B-Instruct
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(minilm-l6 mpnet-base smollm2-135m qwen2.5-coder-0.5b)
mkdir -p "$DIR"
for name in "${names[@]}"; do
  hub=${HUB[$name]:-}
  [ -n "$hub" ] || { echo "error: unknown model $name (one of: ${!HUB[*]})" >&2; exit 2; }
  folder=$("$PY" "$OFFLINE" path "$name" 2>/dev/null || "$PY" "$OFFLINE" fetch "$name" | tail -n 1)
  ln -sfn "$folder" "$DIR/${hub//\//--}"
done
echo "$DIR"
