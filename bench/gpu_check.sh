#!/usr/bin/env bash
# The GPU check in one command (what it measures: bench/gpu_check.py). Here first: `python bench/gpu_check.py prep`
# (.gpucheck/: the packages the GPU image lacks + the data). There:
#
#   bash bench/gpu_check.sh                        # every step within BUDGET seconds; $OUT/summary.txt after each
#
# Environment: OUT (default logs/gpu_check: summary.txt, and logs.tgz at the end; the device tool returns 8 files),
# WORK (models, runs and every log; default /tmp/gpu_check), PY (python3), KIT (.gpucheck), BUDGET (450 s), TINY=1
# (the CPU dry run of tests/test_bench.py: tiny models, a few steps), EXTRA (key=value overrides for every run),
# STEPS (default: env models cuda encoder decoder tenfold).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
KIT=${KIT:-.gpucheck}
OUT=${OUT:-logs/gpu_check}
BUDGET=${BUDGET:-450}
TINY=${TINY:-0}
WORK=${WORK:-/tmp/gpu_check}
mkdir -p "$OUT" "$WORK/logs"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
[ -d "$KIT/data" ] || { echo "error: no $KIT/data: run python bench/gpu_check.py prep here first, carry $KIT" >&2; exit 2; }
KIT=$(cd "$KIT" && pwd)
DATA=$KIT/data
export PYTHONPATH="$KIT/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
read -ra EXTRA_ARGS <<< "${EXTRA:-}"
RUN=(data.data_dir="$DATA" folds.dir="$WORK/folds" output.checkpoints_dir="$WORK/checkpoints"
     output.submissions_dir="$WORK/results" output.plots=false ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
if [ "$TINY" = 1 ]; then ENC_STEPS=6 DEC_STEPS=4 VARIANTS="lora-bf16 lora-fp16 qlora folds"
else ENC_STEPS=150 DEC_STEPS=40 VARIANTS="lora-bf16 lora-fp16 qlora compile-folds folds"; fi
: > "$LOGS/steps.txt"
START=$SECONDS

summary() { "$PY" bench/gpu_check.py summary "$WORK" > "$OUT/summary.txt.tmp" 2>&1; mv "$OUT/summary.txt.tmp" \
  "$OUT/summary.txt"; }

step() {  # step NAME CAP COMMAND...: run within the budget left (at most CAP seconds), log, time, summarize
  local name=$1 cap=$2 left rc t0
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 15 ]; then echo "-- $name: not run (budget of $BUDGET s spent)" >> "$LOGS/steps.txt"; summary; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  t0=$SECONDS
  timeout -k 5 "$cap" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s (cap $cap s)$([ $rc = 124 ] && echo ': CUT at its cap')" \
    >> "$LOGS/steps.txt"
  summary
}

env_info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'archs', torch.cuda.get_arch_list() if c else '-', 'capability', torch.cuda.get_device_capability() if c else '-')"
  # src first, as in every kit command: bitsandbytes then fetches no kernel from the hub (src/hub.py)
  "$PY" -c "import src, transformers, peft, accelerate, iterstrat, bitsandbytes; print('transformers', \
transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'bitsandbytes', \
bitsandbytes.__version__)"
}

read -ra TODO <<< "${STEPS:-env models cuda encoder decoder tenfold}"
for s in "${TODO[@]}"; do
  case $s in
    env) export -f env_info; export PY; step env 30 bash -c env_info ;;
    models) step models 120 "$PY" bench/gpu_check.py models "$WORK/models" --data "$DATA" $([ "$TINY" = 1 ] && echo --tiny) ;;
    cuda) read -ra V <<< "$VARIANTS"; step cuda 150 "$PY" bench/cuda_paths.py --out "$WORK/cuda" --timeout 60 --variants "${V[@]}" ;;
    encoder) step encoder 120 "$PY" bench/speed.py --config configs/mpnet-base-fast.yaml --data-dir "$DATA" \
      --steps "$ENC_STEPS" "${RUN[@]}" model.name_or_path="$WORK/models/mpnet-base" ;;
    decoder) step decoder 120 "$PY" bench/speed.py --config configs/llama-3.2-1b.yaml --data-dir "$DATA" \
      --steps "$DEC_STEPS" "${RUN[@]}" model.name_or_path="$WORK/models/llama-3.2-1b" ;;
    tenfold) step tenfold 240 env USE_SYSTEM_PYTHON=1 PYTHON="$PY" DATA_DIR="$DATA" LOG_DIR="$LOGS/train_sh" \
      bash train.sh configs/mpnet-base-bs128.yaml "${RUN[@]}" model.name_or_path="$WORK/models/mpnet-base" ;;
    *) echo "error: unknown step '$s' (env, models, cuda, encoder, decoder, tenfold)" >&2; exit 2 ;;
  esac
done
echo "== done in $((SECONDS - START)) s" >> "$LOGS/steps.txt"
summary
tar czf "$OUT/logs.tgz" -C "$WORK" logs $(cd "$WORK" && ls -d cuda/*.json cuda/*.log results 2>/dev/null)
cat "$OUT/summary.txt"
