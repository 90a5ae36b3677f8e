#!/usr/bin/env bash
# The GPU check, sized for a 15-minute lease (12 minutes with the uploads): after bench/carry.py's uploads have been
# unpacked (model at $MODELS/mpnet-base, data at $W/data, wheels installed into /tmp/site):
#
#   bash bench/gpu_job.sh                  # = cuda speed b128: about 6 minutes on an H100/H200 (estimated)
#   bash bench/gpu_job.sh cuda speed b128 fast quality blend          # any subset, in this order
#
#   cuda     bench/cuda_paths.py: the CUDA-only paths on a tiny random Llama built there (LoRA bf16 and fp16, QLoRA
#            with the carried bitsandbytes wheel, torch.compile, three folds in one process: memory freed between
#            folds, peak memory per fold)
#   speed    bench/speed.py: the project loop (configs/mpnet-base-fast.yaml, batch 32) vs the HF Trainer peer on
#            fold 0, side by side (the >= 3x target)
#   b128     train.sh configs/mpnet-base-bs128.yaml: real mpnet-base over ten folds -> submission (the <= 120 s target)
#   fast     bench/quality.py configs/mpnet-base-fast.yaml: ten folds at batch 32 (the sped-up reference recipe)
#   quality  bench/quality.py configs/mpnet-base.yaml (the slower, tuned-for-F1 recipe)
#   blend    bench/quality.py tfidf + the mpnet runs --blend (finished runs are reused)
#
# EXTRA="key=value ..." is appended to every mpnet run's overrides (e.g. EXTRA=train.compile=none if compiling fails;
# the CPU dry run in tests/test_bench.py uses it to shrink the runs); CUDA_VARIANTS picks bench/cuda_paths.py's.
#
# What lands in $OUT: summary.txt (the one file to read: GPU, step times, the CUDA paths, speed and ten-fold figures),
# the logs, the submissions (results/) and each run's metrics.json, oof.csv and test.csv (runs/).
#
# The device tool returns only what a call leaves in its own $OUT and allows 10 minutes a call: start the job
# detached into a folder that outlives the call, then poll with back-to-back calls:
#   OUT=/tmp/gpu_out setsid nohup bash bench/gpu_job.sh > /tmp/gpu_job.log 2>&1 &
#   sleep 400; cp -r /tmp/gpu_out/. "$OUT"/; cat /tmp/gpu_out/summary.txt      # each poll, until "== done"
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

[ $# -gt 0 ] || set -- cuda speed b128
for s in "$@"; do
  case $s in
    cuda) read -ra VARIANTS <<< "${CUDA_VARIANTS:-lora-bf16 lora-fp16 qlora compile folds}"
      step cuda "$PY" bench/cuda_paths.py --out "$OUT/cuda" --variants "${VARIANTS[@]}" ;;
    speed)
      step speed "$PY" bench/speed.py --config configs/mpnet-base-fast.yaml --data-dir "$DATA" --fold 0 "${MODEL[@]}" ;;
    b128) step b128 env USE_SYSTEM_PYTHON=1 PYTHON="$PY" DATA_DIR="$DATA" LOG_DIR="$OUT/train_sh" \
      bash train.sh configs/mpnet-base-bs128.yaml output.plots=false "${MODEL[@]}" ;;
    fast) step fast "$PY" bench/quality.py --data-dir "$DATA" configs/mpnet-base-fast.yaml "${MODEL[@]}" ;;
    quality) step quality "$PY" bench/quality.py --data-dir "$DATA" configs/mpnet-base.yaml "${MODEL[@]}" ;;
    blend)
      step blend "$PY" bench/quality.py --data-dir "$DATA" --blend --blend-name blend_tfidf_mpnet \
        configs/tfidf.yaml $(for c in mpnet-base-bs128 mpnet-base-fast mpnet-base; do \
        [ -f "checkpoints/$c/oof.csv" ] && echo "configs/$c.yaml"; done) "${MODEL[@]}" ;;
    *) echo "error: unknown step '$s' (cuda, speed, b128, fast, quality, blend)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT/results"
cp bench/results/*.csv submissions/*.csv "$OUT/results/" 2>/dev/null || true
for d in checkpoints/*/; do
  [ -f "$d/metrics.json" ] || continue
  mkdir -p "$OUT/runs/$(basename "$d")"
  cp "$d"/metrics.json "$d"/oof.csv "$d"/test.csv "$OUT/runs/$(basename "$d")/" 2>/dev/null || true
done

{  # the one file to read
  echo "# GPU"; cat "$OUT/gpu.txt"
  echo "# steps"; cat "$OUT/steps.txt"
  if [ -f "$OUT/cuda/summary.jsonl" ]; then echo "# CUDA paths (bench/cuda_paths.py)"; cat "$OUT/cuda/summary.jsonl"; fi
  if [ -f "$OUT/speed.log" ]; then echo "# speed (fold 0)"; grep -E "ex/s|ratio|speed bench" "$OUT/speed.log" || true; fi
  for d in "$OUT"/runs/*/; do
    [ -f "$d/metrics.json" ] || continue
    echo "# $(basename "$d")"
    "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print({k: v for k, v in m.items() \
if not isinstance(v, (dict, list))})" "$d/metrics.json"
  done
  for d in checkpoints/*/; do
    ls "$d"fold*/done.json >/dev/null 2>&1 || continue
    "$PY" -c "import json, sys; t = [json.load(open(f))['elapsed_s'] for f in sys.argv[2:]]; \
print(f'{sys.argv[1]}: {len(t)} folds trained in {sum(t):.0f} s (training + evaluation, sum over folds)')" \
      "$(basename "$d")" "$d"fold*/done.json
  done
  echo "== done"
} > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
