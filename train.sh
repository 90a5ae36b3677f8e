#!/usr/bin/env bash
# Run one config end to end (folds -> train every fold -> select checkpoints -> OOF/test -> thresholds ->
# submissions/<exp>.csv), resuming what a killed run left. `bash train.sh --help` prints the usage below.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash train.sh [CONFIG.yaml] [options] [key=value ...]

Runs one config end to end: folds -> train every fold -> select checkpoints -> OOF/test predictions ->
thresholds -> submissions/<exp>.csv. A rerun resumes: finished folds are skipped, an unfinished fold continues
from its newest checkpoint, cached test predictions are reused (after a pod is preempted, run the same command).

  bash train.sh                   the TF-IDF baseline (configs/tfidf.yaml) on data/ (CPU, ~50 s)
  DATA_DIR=/workspace/data bash train.sh configs/roberta-base.yaml --folds 0-4 train.lr=3e-5

CONFIG.yaml         the config (default: configs/tfidf.yaml)
key=value           overrides any setting (every key: python -m src config --keys); a text value is taken
                    literally (data.data_dir=/d/comp #v2 keeps its " #v2")
options:
  --folds 0-9|0,3|0-2,5   train only these folds (sets folds.run)
  --resume          accepted for clarity: a rerun always resumes (finished folds are skipped)
  --wandb           log to Weights & Biases (WANDB_API_KEY)
  --submit          upload the submission with the Kaggle CLI (KAGGLE_COMPETITION and KAGGLE_USERNAME +
                    KAGGLE_KEY or ~/.kaggle/kaggle.json; checked before anything runs)
  -h, --help        this text
paths: a relative path you type (CONFIG.yaml, DATA_DIR, LOG_DIR, PYTHON=dir/python, and the overrides
  data.data_dir=, folds.dir=, output.checkpoints_dir=, output.submissions_dir=, probe.cache_dir=) is taken from
  the folder you run train.sh in; relative paths written in a config file are taken from the repository.
  The data folder is checked before any setup.
logs: LOG_DIR/<exp>-<YYYYmmdd-HHMMSS>.log, one per run: what the screen shows once setup is done, each line
  stamped [HH:MM:SS], a progress bar as its last state only, ending with the elapsed time and the exit status.
environment:
  DATA_DIR          the competition folder (train.csv, test.csv, sample_submission.csv); default: the config's
                    data.data_dir
  LOG_DIR           the log folder (default: logs/ in the repository)
  USE_SYSTEM_PYTHON=1  no .venv: run PYTHON, installing the requirements if it lacks them
  PYTHON            the python for USE_SYSTEM_PYTHON=1, or that makes .venv (default: python3)
  NUM_PROCESSES     training processes (default: the visible GPUs; >1 trains through `accelerate launch`)
  ALLOW_CPU=1       train on the CPU even where nvidia-smi lists GPUs that torch cannot use
  PROGRESS_INTERVAL seconds between progress bar refreshes (default: 1 on a terminal, 30 otherwise)
  TORCH_SPEC        pip arguments for the torch of .venv, replacing any other (setup.sh; default: the CPU
                    build without nvidia-smi, PyPI's CUDA build with it)
  KAGGLE_COMPETITION, KAGGLE_USERNAME, KAGGLE_KEY, KAGGLE_CONFIG_DIR (--submit), WANDB_API_KEY (--wandb)
EOF
}

die() { echo "error: $*" >&2; exit 2; }

CALLER=$PWD  # relative paths the user typed mean this folder (train.sh then works in the repository)
REPO=$(CDPATH="" cd -- "$(dirname -- "${BASH_SOURCE[0]:-$0}")" && pwd)

# $2 as an absolute path into variable $1: a relative path is taken from the caller's folder ("" stays "").
from_caller() {
  local p=$2
  while [[ "$p" == ./* ]]; do p=${p#./}; done
  case "$p" in
    /*|"") printf -v "$1" '%s' "$p" ;;
    .) printf -v "$1" '%s' "$CALLER" ;;
    *) printf -v "$1" '%s' "$CALLER/$p" ;;
  esac
}

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

# The settings that name a folder: a relative value typed on the command line is taken from the caller's folder.
PATH_KEYS=" data.data_dir folds.dir output.checkpoints_dir output.submissions_dir probe.cache_dir "

# A key=value override, or the config file (.yaml): anything else stops here with one line.
add_arg() {
  local key=${1%%=*} value
  if [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_.-]*$ && "$1" == *=* ]]; then
    [[ "$1" =~ ^folds\.run=[][[:space:],]*$ ]] &&
      die "$1 names no fold: give the folds to train (e.g. --folds 0,3), or leave it out to train every fold"
    if [[ "$PATH_KEYS" == *" $key "* ]]; then
      from_caller value "${1#*=}"
      ARGS+=("$key=$value")
      [ "$key" != data.data_dir ] || DATA_ARG=$value DATA_ARG_SET=1
    else
      ARGS+=("$1")
    fi
  elif [[ "$1" == *.yaml || "$1" == *.yml ]]; then
    [ -z "$CONFIG" ] || die "two config files, $CONFIG and $1: give one (overrides are key=value)"
    CONFIG=$1
  else
    die "'$1' is neither a config file (.yaml) nor a key=value override (see bash train.sh --help)"
  fi
}

for arg in "$@"; do case "$arg" in -h|--help) usage; exit 0 ;; esac; done

CONFIG="" ARGS=() SUBMIT=0 WANDB=0 DATA_ARG="" DATA_ARG_SET=0
while [ $# -gt 0 ]; do
  case "$1" in
    --folds) [ $# -ge 2 ] || die "--folds needs a value, e.g. --folds 0-9 or --folds 0,3"; add_folds "$2"; shift ;;
    --folds=*) add_folds "${1#--folds=}" ;;
    --wandb) ARGS+=("train.report_to=wandb") WANDB=1 ;;
    --submit) SUBMIT=1 ;;
    --resume) ;;
    -*) die "unknown option $1 (see bash train.sh --help)" ;;
    *) add_arg "$1" ;;
  esac
  shift
done
TYPED_CONFIG=$CONFIG
[ -z "$CONFIG" ] || from_caller CONFIG "$CONFIG"
from_caller LOG_DIR "${LOG_DIR:-}"
[ -z "${DATA_DIR:-}" ] || from_caller DATA_DIR "$DATA_DIR"
[[ "${PYTHON:-}" != */* ]] || from_caller PYTHON "$PYTHON"  # a path, not a command name looked up in PATH

cd "$REPO"
CONFIG=${CONFIG:-configs/tfidf.yaml}
LOG_DIR=${LOG_DIR:-$REPO/logs}
if [ ! -f "$CONFIG" ]; then
  hint=""
  [ -z "$TYPED_CONFIG" ] || [[ "$TYPED_CONFIG" == /* ]] || [ ! -f "$REPO/$TYPED_CONFIG" ] ||
    hint=" (relative paths are taken from the folder you run train.sh in: did you mean $REPO/$TYPED_CONFIG?)"
  die "config file not found: $CONFIG$hint"
fi
[[ "${NUM_PROCESSES:-1}" =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES must be a whole number >= 1, got '$NUM_PROCESSES'"
if [ "${USE_SYSTEM_PYTHON:-0}" = 1 ]; then
  PY=${PYTHON:-python3}
  command -v "$PY" >/dev/null || die "USE_SYSTEM_PYTHON=1: no python '$PY' (set PYTHON=/path/to/python)"
fi

# The config file's data.data_dir, read as text (no python before setup): "data" when the file sets none; fails
# (nothing printed) for a form this reading does not follow (flow style, escapes, ...), which the run checks later.
read -r -d '' DATA_DIR_OF_CONFIG <<'EOF' || true
function unsure() { bad = 1; exit }
{ sub(/\r$/, "") }
/^["']?data["']?[ \t]*:/ { if ($0 !~ /^data:[ \t]*(#.*)?$/) unsure(); section = 1; next }
section && /^[^ \t#]/ { section = 0 }
section && /^[ \t]*["']?data_dir["']?[ \t]*:/ {
  if ($0 !~ /^[ \t]+data_dir:[ \t]/) unsure()
  v = $0; sub(/^[ \t]+data_dir:[ \t]+/, "", v)
  if (v ~ /^"[^"\\]*"[ \t]*(#.*)?$/ || v ~ /^'[^']*'[ \t]*(#.*)?$/) {
    q = substr(v, 1, 1); v = substr(v, 2); v = substr(v, 1, index(v, q) - 1)
  }
  else if (v == "" || v ~ /^[][{}&*!|>%@`"'#,]/ || v ~ /^[-?:]([ \t]|$)/) unsure()
  else { sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v); if (v ~ /^(~|null|Null|NULL)$/ || v ~ /: /) unsure() }
  dir = v; set = 1
}
END { if (bad) exit 1; print (set ? dir : "data") }
EOF

# The competition folder, checked before any setup (minutes on a fresh pod): DATA_DIR, else the last
# data.data_dir= on the command line, else the config file's (a relative one is in the repository).
check_data() {
  local dir=$1 from=$2 f missing="" fix="point DATA_DIR at the competition folder (train.csv, test.csv, \
sample_submission.csv), or put the files there (README: The data folder)"
  [[ "$dir" == /* ]] || { dir=$REPO/$dir from+=", relative to the repository"; }
  [ -d "$dir" ] || die "data folder $dir does not exist ($from): $fix"
  for f in train.csv test.csv sample_submission.csv; do [ -f "$dir/$f" ] || missing+=", $f"; done
  [ -z "$missing" ] || die "data folder $dir lacks ${missing#, } ($from): $fix"
}
if [ -n "${DATA_DIR:-}" ]; then
  check_data "$DATA_DIR" "DATA_DIR"
  ARGS+=("data.data_dir=$DATA_DIR")
elif [ "$DATA_ARG_SET" = 1 ]; then
  check_data "$DATA_ARG" "data.data_dir= on the command line"
elif DIR=$(awk "$DATA_DIR_OF_CONFIG" "$CONFIG" 2>/dev/null); then
  check_data "$DIR" "data.data_dir of $CONFIG"
fi

if [ "$SUBMIT" = 1 ]; then  # fail now, not after hours of training
  [ -n "${KAGGLE_COMPETITION:-}" ] || die "--submit needs KAGGLE_COMPETITION=<competition slug>"
  if [ -z "${KAGGLE_USERNAME:-}${KAGGLE_API_TOKEN:-}" ] && [ ! -f "${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}/kaggle.json" ]; then
    die "--submit needs Kaggle credentials: KAGGLE_USERNAME + KAGGLE_KEY, or ~/.kaggle/kaggle.json"
  fi
fi
{ mkdir -p "$LOG_DIR" && [ -w "$LOG_DIR" ]; } 2>/dev/null || die "cannot write the log folder $LOG_DIR (set LOG_DIR)"

# The environment: .venv (made once by setup.sh), or the given python, installing the requirements if it lacks them.
if [ "${USE_SYSTEM_PYTHON:-0}" = 1 ]; then
  "$PY" -c "import torch, transformers, peft, accelerate, sklearn, iterstrat, yaml" 2>/dev/null || PYTHON=$PY bash setup.sh
else
  bash setup.sh
  PY=.venv/bin/python
fi
if [ "$WANDB" = 1 ]; then "$PY" -c "import wandb" 2>/dev/null || "$PY" -m pip install -q wandb; fi

# The log, named by the run: the screen shows the live output; the log file gets each line stamped [HH:MM:SS],
# a carriage-return-updated line (a progress bar) as its last state. The writer ignores Ctrl-C, so the log still
# gets the end of an interrupted run.
EXP=$("$PY" -m src config --config "$CONFIG" ${ARGS[@]+"${ARGS[@]}"} --get exp) || exit 2
EXP=${EXP##*$'\n'}  # (its last line: a library may print a notice first)
LOG="$LOG_DIR/$EXP-$(date +%Y%m%d-%H%M%S).log"
read -r -d '' LOG_WRITER <<'EOF' || true
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run, and its last lines still reach the log
log, screen, line = open(sys.argv[1], "ab"), sys.stdout.buffer, b""
def put(lines):  # each line's last state (the text after its last \r), stamped; a full disk stops only the log
    global log
    stamp = time.strftime("[%H:%M:%S]").encode()
    last = [x.rstrip(b"\r").rsplit(b"\r", 1)[-1] for x in lines]
    text = b"".join(stamp + (b" " + t if t else b"") + b"\n" for t in last)
    try:
        if log and text:
            log.write(text)
            log.flush()
    except OSError:
        log = None
while chunk := os.read(0, 1 << 16):
    if screen:
        try:
            screen.write(chunk)
            screen.flush()
        except OSError:  # the screen is gone: go on logging
            screen = None
    *done, line = (line + chunk).split(b"\n")
    put(done)
    cut = line.rfind(b"\r", 0, len(line) - 1)  # a bar that never ends its line: keep only its last state
    if len(line) > 1 << 16 and cut > 0:
        line = line[cut:]
put([line] if line else [])
EOF
[ ! -t 1 ] || export PROGRESS_INTERVAL=${PROGRESS_INTERVAL:-1}  # a terminal: live bars (else a refresh per 30 s)
exec > >(trap '' INT; exec "$PY" -c "$LOG_WRITER" "$LOG") 2>&1  # everything below goes to the screen and the log
START=$SECONDS
finish() {
  local rc=$? t=$((SECONDS - START))
  local took
  took=$(printf '%d:%02d:%02d' $((t / 3600)) $((t / 60 % 60)) $((t % 60)))
  if [ "$rc" = 0 ]; then END="train.sh: $EXP done in $took (exit status 0)"
  else END="train.sh: $EXP stopped after $took (exit status $rc)"; fi
  trap '' PIPE
  echo "$END" 2>/dev/null || true
  for _ in $(seq 50); do  # the log writer is its own process: let it write the last line before returning
    [[ "$(tail -n 1 "$LOG" 2>/dev/null)" != *"$END" ]] || break
    sleep 0.1
  done
  exit "$rc"
}
trap finish EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM  # so finish sees the signal's status
echo "train.sh: $EXP started $(date '+%Y-%m-%d %H:%M:%S'): $CONFIG ${ARGS[*]:-} (log: $LOG)"

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
built for this driver into .venv (TORCH_SPEC=\"torch --index-url https://download.pytorch.org/whl/cuXYZ\" bash setup.sh); ALLOW_CPU=1 trains on the CPU anyway" >&2
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
