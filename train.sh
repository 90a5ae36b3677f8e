#!/usr/bin/env bash
# Run one config end to end: folds -> train every fold -> select checkpoints -> OOF/test -> thresholds ->
# submissions/<exp>.csv. A rerun resumes: finished folds are skipped, an unfinished fold continues from its newest
# checkpoint, cached test predictions are reused (so after a pod is preempted, run the same command again).
#
#   bash train.sh                                  # TF-IDF baseline on data/ (CPU, ~50 s)
#   bash train.sh configs/X.yaml [options] [key=value ...]   (a text setting's value is taken literally)
#
# options: --folds 0-9|0,3|0-2,5   train only these folds   --wandb   log to Weights & Biases (WANDB_API_KEY)
#          --submit          upload the submission with the Kaggle CLI (KAGGLE_COMPETITION, kaggle.json creds)
#          --resume          accepted for clarity: a rerun always resumes (finished folds are skipped)
# env:     DATA_DIR (competition folder, default: the config's data.data_dir), USE_SYSTEM_PYTHON=1 (no .venv;
#          PYTHON names the interpreter), NUM_PROCESSES (training processes; default: the visible GPUs; >1 trains
#          through `accelerate launch`), LOG_DIR (default logs/: one log file per run, also shown on screen),
#          ALLOW_CPU=1 (train on the CPU even where nvidia-smi lists GPUs that torch cannot use)
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "error: $*" >&2; exit 2; }

# --folds 0-9 | 0,3 | 0-2,5 -> folds.run=[0,1,2,5] (the config checks them against folds.n_folds).
add_folds() {
  local spec=${1//[[:space:]]/} item lo hi out=""
  [[ "$spec" =~ ^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?)*$ ]] ||
    die "--folds needs fold numbers or ranges like 0-9, 0,3 or 0-2,5; got '$1'"
  for item in ${spec//,/ }; do
    lo=$((10#${item%-*})) hi=$((10#${item#*-}))
    [ "$lo" -le "$hi" ] || die "--folds range $item runs backwards; write $hi-$lo"
    out+=,$(seq -s, "$lo" "$hi")
  done
  ARGS+=("folds.run=[${out#,}]")
}

# A key=value override, or the config file (.yaml): anything else stops here with one line.
add_arg() {
  if [[ "${1%%=*}" =~ ^[A-Za-z_][A-Za-z0-9_.-]*$ && "$1" == *=* ]]; then
    [[ "$1" =~ ^folds\.run=[][[:space:],]*$ ]] &&
      die "$1 names no fold: give the folds to train (e.g. --folds 0,3), or leave it out to train every fold"
    ARGS+=("$1")
  elif [[ "$1" == *.yaml || "$1" == *.yml ]]; then
    [ -z "$CONFIG" ] || die "two config files, $CONFIG and $1: give one (overrides are key=value)"
    CONFIG=$1
  else
    die "'$1' is neither a config file (.yaml) nor a key=value override (see bash train.sh --help)"
  fi
}

CONFIG="" ARGS=() SUBMIT=0 WANDB=0
while [ $# -gt 0 ]; do
  case "$1" in
    --folds) [ $# -ge 2 ] || die "--folds needs a value, e.g. --folds 0-9 or --folds 0,3"; add_folds "$2"; shift ;;
    --folds=*) add_folds "${1#--folds=}" ;;
    --wandb) ARGS+=("train.report_to=wandb") WANDB=1 ;;
    --submit) SUBMIT=1 ;;
    --resume) ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see bash train.sh --help)" ;;
    *) add_arg "$1" ;;
  esac
  shift
done
CONFIG=${CONFIG:-configs/tfidf.yaml}
[ -f "$CONFIG" ] || die "config file not found: $CONFIG"
[[ "${NUM_PROCESSES:-1}" =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES must be a whole number >= 1, got '$NUM_PROCESSES'"
[ -n "${DATA_DIR:-}" ] && ARGS+=("data.data_dir=$DATA_DIR")
if [ "$SUBMIT" = 1 ]; then  # fail now, not after hours of training
  [ -n "${KAGGLE_COMPETITION:-}" ] || { echo "error: --submit needs KAGGLE_COMPETITION=<competition slug>" >&2; exit 2; }
  if [ -z "${KAGGLE_USERNAME:-}${KAGGLE_API_TOKEN:-}" ] && [ ! -f "${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}/kaggle.json" ]; then
    echo "error: --submit needs Kaggle credentials: KAGGLE_USERNAME + KAGGLE_KEY, or ~/.kaggle/kaggle.json" >&2; exit 2
  fi
fi

# The environment: .venv (made once by setup.sh), or the given python, installing the requirements if it lacks them.
if [ "${USE_SYSTEM_PYTHON:-0}" = 1 ]; then
  PY=${PYTHON:-python3}
  command -v "$PY" >/dev/null || die "USE_SYSTEM_PYTHON=1: no python '$PY' (set PYTHON=/path/to/python)"
  "$PY" -c "import torch, transformers, peft, accelerate, sklearn, iterstrat, yaml" 2>/dev/null || PYTHON=$PY bash setup.sh
else
  bash setup.sh
  PY=.venv/bin/python
fi
if [ "$WANDB" = 1 ]; then "$PY" -c "import wandb" 2>/dev/null || "$PY" -m pip install -q wandb; fi

LOG_DIR=${LOG_DIR:-logs}
{ mkdir -p "$LOG_DIR" && [ -w "$LOG_DIR" ]; } 2>/dev/null || die "cannot write the log folder '$LOG_DIR' (set LOG_DIR=...)"
LOG="$LOG_DIR/$(basename "$CONFIG" .yaml)-$(date +%Y%m%d-%H%M%S).log"
exec > >(tee -a "$LOG") 2>&1  # everything below goes to the screen and the log
echo "train.sh: $CONFIG ${ARGS[*]:-} (log: $LOG)"

# 1. The fold file, made by one process before any training process starts (so they never race to write it).
"$PY" -m src folds --config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"}
{ IFS= read -r MODEL_TYPE; IFS= read -r SUB; IFS= read -r METRICS; } < <("$PY" -c "import sys; from src.config import load_config; \
from src.rundir import RunDir; cfg = load_config(sys.argv[1], sys.argv[2:]); rd = RunDir.of(cfg); \
print(cfg.model_type, rd.submission, rd.metrics, sep='\n')" "$CONFIG" ${ARGS[@]+"${ARGS[@]}"}) || exit 2

# 2. Several GPUs: the folds train in data-parallel processes (accelerate launch); done folds are skipped.
#    A GPU that nvidia-smi lists but torch cannot use (a wheel built for a newer driver) stops the run here rather
#    than training on the CPU for hours; ALLOW_CPU=1 trains on the CPU anyway.
NPROC=1
if [ "$MODEL_TYPE" != tfidf ] && [ "$MODEL_TYPE" != ensemble ]; then
  NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  LISTED=$( { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU ' || true)
  if [ "$NGPU" = 0 ] && [ "${LISTED:-0}" -gt 0 ] && [ "${ALLOW_CPU:-0}" != 1 ]; then
    echo "error: nvidia-smi lists $LISTED GPU(s) but $PY's torch $("$PY" -c "import torch; print(torch.__version__)") \
sees none (built for another CUDA driver?): rerun with USE_SYSTEM_PYTHON=1 to use the image's torch, or install a torch \
built for this driver into .venv (TORCH_SPEC=... bash setup.sh after rm -r .venv); ALLOW_CPU=1 trains on the CPU anyway" >&2
    exit 2
  fi
  [ "$MODEL_TYPE" = transformer ] && NPROC=${NUM_PROCESSES:-$NGPU}
fi
if [ "$NPROC" -gt 1 ]; then
  echo "train.sh: training in $NPROC processes (accelerate launch; without CUDA they are CPU processes)"
  # (mixed precision comes from the config's train.precision, which overrides the launcher's "no")
  "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$NPROC" --num_machines 1 --mixed_precision no \
    --dynamo_backend no -m src.train --config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"}
fi

# 3. One process: train what is left (everything, with one GPU), select checkpoints, predict, thresholds, submission.
"$PY" -m src run --config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"}

if [ "$SUBMIT" = 1 ]; then
  if ! "$PY" -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['complete'])" "$METRICS" || [ ! -f "$SUB" ]; then
    echo "error: this run covers only some folds, so there is no submission to upload; train every fold first" >&2; exit 2
  fi
  command -v kaggle >/dev/null || [ -x "$(dirname "$PY")/kaggle" ] || "$PY" -m pip install -q kaggle
  KAGGLE=$(command -v kaggle || echo "$(dirname "$PY")/kaggle")
  "$KAGGLE" competitions submit -c "$KAGGLE_COMPETITION" -f "$SUB" \
    -m "$(basename "$CONFIG" .yaml) $(git rev-parse --short HEAD 2>/dev/null || true)"
fi
