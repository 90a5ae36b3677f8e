#!/usr/bin/env bash
# Issue-6 measurements on a GPU machine, in priority order, after bench/carry.py's uploads have been unpacked
# (model at $MODELS/mpnet-base, data at $W/data, wheels installed into /tmp/site):
#
#   bash bench/gpu_job.sh speed b128 fast quality blend   # any subset, in this order; each step logs to $OUT/<step>.log
#
#   speed    bench/speed.py: the project loop (configs/mpnet-base-fast.yaml, batch 32) vs the HF Trainer peer on
#            fold 0 (the >= 3x target), then the project loop again without torch.compile
#   b128     bench/quality.py configs/mpnet-base-bs128.yaml: ten folds -> submission (the <= 120 s target)
#   fast     bench/quality.py configs/mpnet-base-fast.yaml: ten folds at batch 32 (the sped-up reference recipe)
#   quality  bench/quality.py configs/mpnet-base.yaml (the slower, tuned-for-F1 recipe)
#   blend    bench/quality.py tfidf + the mpnet runs --blend (finished runs are reused)
#
# EXTRA="key=value ..." is appended to every run's overrides (e.g. EXTRA=train.compile=none if compiling fails;
# the CPU dry run in tests/test_bench.py uses it to shrink the runs).
#
# What lands in $OUT: the logs, bench/results/*.csv, and each run's metrics.json, oof.csv and test.csv (to blend
# with CPU runs at home).
#
# With a remote that returns only what a call leaves in its own $OUT and allows 10 minutes a call: start the job
# detached into a folder that outlives the call, then poll with back-to-back calls:
#   OUT=/tmp/gpu_out setsid nohup bash bench/gpu_job.sh speed b128 fast quality blend > /tmp/gpu_job.log 2>&1 &
#   sleep 540; cp -r /tmp/gpu_out/. "$OUT"/; cat /tmp/gpu_out/steps.txt      # each poll, until "== blend: N s"
set -euo pipefail
PY=${PY:-python3}
W=${W:-/tmp/w}
MODELS=${MODELS:-/tmp/models}
OUT=${OUT:-logs/gpu}
DATA=${DATA:-$W/data}
mkdir -p "$OUT"
[ -f "$MODELS/mpnet-base/config.json" ] || { echo "error: no model at $MODELS/mpnet-base (run bench/carry.py's" \
  "uploads and its unpack command first)" >&2; exit 2; }
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
read -ra EXTRA_ARGS <<< "${EXTRA:-}"
MODEL=("model.name_or_path=$MODELS/mpnet-base" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"

step() {  # step NAME COMMAND...: run, log, and say how long it took
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/steps.txt"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1 || echo "!! $name failed (exit $?), see $OUT/$name.log" | tee -a "$OUT/steps.txt"
  echo "== $name: $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
  grep -v "it/s\]\|s/it\]\|step/s\]\|s/step\]\|batch/s\]" "$OUT/$name.log" | tail -n 25
}

for s in "$@"; do
  case $s in
    speed)
      step speed "$PY" bench/speed.py --config configs/mpnet-base-fast.yaml --data-dir "$DATA" --fold 0 "${MODEL[@]}"
      step speed_eager "$PY" bench/speed.py --config configs/mpnet-base-fast.yaml --data-dir "$DATA" --fold 0 \
        --only project train.compile=none exp=mpnet-eager "${MODEL[@]}" ;;
    b128) step b128 "$PY" bench/quality.py --data-dir "$DATA" configs/mpnet-base-bs128.yaml "${MODEL[@]}" ;;
    fast) step fast "$PY" bench/quality.py --data-dir "$DATA" configs/mpnet-base-fast.yaml "${MODEL[@]}" ;;
    quality) step quality "$PY" bench/quality.py --data-dir "$DATA" configs/mpnet-base.yaml "${MODEL[@]}" ;;
    blend)
      step blend "$PY" bench/quality.py --data-dir "$DATA" --blend --blend-name blend_tfidf_mpnet \
        configs/tfidf.yaml $(for c in mpnet-base-bs128 mpnet-base-fast mpnet-base; do \
        [ -f "checkpoints/$c/oof.csv" ] && echo "configs/$c.yaml"; done) "${MODEL[@]}" ;;
    *) echo "error: unknown step '$s' (speed, b128, fast, quality, blend)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT/results"
cp bench/results/*.csv "$OUT/results/" 2>/dev/null || true
for d in checkpoints/*/; do
  [ -f "$d/metrics.json" ] || continue
  mkdir -p "$OUT/runs/$(basename "$d")"
  cp "$d"/metrics.json "$d"/oof.csv "$d"/test.csv "$OUT/runs/$(basename "$d")/" 2>/dev/null || true
done
