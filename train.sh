#!/usr/bin/env bash
# Run one config end to end: folds -> train every fold -> OOF/test -> thresholds -> submissions/<exp>.csv.
#
#   bash train.sh                                  # TF-IDF baseline on data/ (CPU, ~40 s)
#   bash train.sh configs/X.yaml [options] [key=value ...]
#
# options: --folds 0-9|0,3   train only these folds   --wandb   log to Weights & Biases (WANDB_API_KEY)
#          --submit          upload the submission with the Kaggle CLI (KAGGLE_COMPETITION, kaggle.json creds)
#          --resume          accepted for clarity: a rerun always resumes (finished folds are skipped)
# env:     DATA_DIR (competition folder, default: the config's data.data_dir), USE_SYSTEM_PYTHON=1 (no .venv)
set -euo pipefail
cd "$(dirname "$0")"

CONFIG=configs/tfidf.yaml
if [ $# -gt 0 ] && [[ "$1" != -* ]] && [[ "$1" != *=* ]]; then CONFIG=$1; shift; fi
ARGS=() SUBMIT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --folds) spec=$2; shift
      if [[ "$spec" =~ ^([0-9]+)-([0-9]+)$ ]]; then spec=$(seq -s, "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"); fi
      ARGS+=("folds.run=[$spec]") ;;
    --wandb) ARGS+=("train.report_to=wandb") ;;
    --submit) SUBMIT=1 ;;
    --resume) ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see bash train.sh --help)" >&2; exit 2 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ -f "$CONFIG" ] || { echo "error: config file not found: $CONFIG" >&2; exit 2; }
[ -n "${DATA_DIR:-}" ] && ARGS+=("data.data_dir=$DATA_DIR")

if [ "${USE_SYSTEM_PYTHON:-0}" = 1 ]; then PY=${PYTHON:-python3}; else bash setup.sh; PY=.venv/bin/python; fi

mkdir -p logs
LOG="logs/$(basename "$CONFIG" .yaml)-$(date +%Y%m%d-%H%M%S).log"
echo "train.sh: $CONFIG ${ARGS[*]:-} (log: $LOG)"
"$PY" -m src run --config "$CONFIG" "${ARGS[@]}" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
[ "$status" = 0 ] || exit "$status"

if [ "$SUBMIT" = 1 ]; then
  SUB=$("$PY" -c "import sys; from src.config import load_config; from src.rundir import RunDir; \
print(RunDir.of(load_config(sys.argv[1], sys.argv[2:])).submission)" "$CONFIG" "${ARGS[@]}")
  [ -f "$SUB" ] || { echo "error: no submission at $SUB (partial run?)" >&2; exit 2; }
  [ -n "${KAGGLE_COMPETITION:-}" ] || { echo "error: set KAGGLE_COMPETITION=<competition slug> to submit" >&2; exit 2; }
  command -v kaggle >/dev/null || "$PY" -m pip install -q kaggle
  kaggle competitions submit -c "$KAGGLE_COMPETITION" -f "$SUB" -m "$(basename "$CONFIG") $(git rev-parse --short HEAD 2>/dev/null)"
fi
