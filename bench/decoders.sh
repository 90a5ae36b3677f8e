#!/usr/bin/env bash
# Decoder LLMs as multi-label classifiers on the CPU, proven on real weights (docs/cpu.md "Decoders on a CPU"): SmolLM2-135M
# with LoRA over ten folds, the same folds 0-2 with the plain Trainer + peft peer side by side, SmolLM2 with QLoRA,
# Qwen2.5-Coder-0.5B with LoRA, both decoders in the best CPU blend, the zero-shot label scorers on every train row,
# and the submissions in bench/results/.
# Finished folds and runs are reused, so a killed run resumes where it stopped (about 15 h of both cores, and 12 h more
# when the blend's members are not made yet).
#   bash bench/decoders.sh [competition folder, default ../shared/data/emotion-detection]
# Each step's wall time and peak memory (largest process, GNU time) are appended to logs/decoders_times.txt; the peer
# comparison's output goes to logs/decoder_peer.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${1:-../shared/data/emotion-detection}
D=data.data_dir=$E
mkdir -p logs bench/results
TIMES=logs/decoders_times.txt
export MODELS_DIR=${MODELS_DIR:-$(bash bench/models_dir.sh smollm2-135m qwen2.5-coder-0.5b)}
source bench/lib.sh
keep() {  # keep EXP: the run's submission, validated, into bench/results/
  $PY -m src validate "submissions/$1.csv" "$E/sample_submission.csv"
  cp "submissions/$1.csv" "bench/results/$1.csv"
}

finetune configs/smollm2-135m-cpu.yaml smollm2-135m-cpu
keep smollm2-135m-cpu

# the plain peer on folds 0-2 (the project's folds are the run's own, reused): one lane per core, and the
# throughput of both loops, 30 updates each, side by side in the second lane; skipped once its figures are in
# logs/decoder_peer.txt (delete that file to run it again: about 2.3 h of both cores)
P=(--config configs/smollm2-135m-cpu.yaml --data-dir "$E")
if ! grep -q "^quality" logs/decoder_peer.txt 2>/dev/null; then
  timed peer-folds-0-1 env OMP_NUM_THREADS=1 $PY bench/speed.py "${P[@]}" --steps 0 --quality --folds 0-1 \
    > logs/decoder_peer_a.txt 2>&1 &
  lane=$!
  timed peer-fold-2 env OMP_NUM_THREADS=1 $PY bench/speed.py "${P[@]}" --steps 30 --quality --folds 2 \
    > logs/decoder_peer_b.txt 2>&1
  wait $lane
  grep -h "^throughput\|^quality" logs/decoder_peer_a.txt logs/decoder_peer_b.txt > logs/decoder_peer.txt
fi

finetune configs/smollm2-135m-cpu.yaml smollm2-135m-qlora-cpu model.method=qlora
keep smollm2-135m-qlora-cpu
# a Qwen fold process peaks at 13.4 GB: the second one checkpoints its activations (6.2 GB) so both fit 24 GB
LANE2=model.gradient_checkpointing=true finetune configs/qwen2.5-coder-0.5b-cpu.yaml qwen2.5-coder-0.5b-cpu
keep qwen2.5-coder-0.5b-cpu

# in the best CPU blend: its members come from bench/tricks.sh (about 12 h of both cores; skipped once that blend is
# made), then the twelve-member equal blend and mpnet with the two decoders beside them, weights searched on OOF;
# the nested estimates of blend_tw12_mpnet (without the decoders) and of this blend are in each run's metrics.json
[ -f checkpoints/blend_tw12_mpnet/metrics.json ] || bash bench/tricks.sh "$E"
timed blend_tw12_mpnet_decoders $PY -m src.ensemble blend_tw12_equal mpnet-base-cpu smollm2-135m-cpu \
  qwen2.5-coder-0.5b-cpu --out blend_tw12_mpnet_decoders "$D"
keep blend_tw12_mpnet_decoders

# zero-shot label scoring with the same model on every train row (no training): what fine-tuning buys
# (bf16 weights: 2.3x faster than float32 on an AMX CPU; the train rows only: OOF beside the fine-tuned runs')
N=(data.normalize=tweet model.dtype=bfloat16 llm.max_test_rows=-1)
timed llm_zeroshot_unary $PY -m src run --config configs/llm_zeroshot_unary.yaml "$D" "${N[@]}"
timed llm_zeroshot_multi $PY -m src run --config configs/llm_zeroshot_multi.yaml "$D" "${N[@]}"
cat "$TIMES"
