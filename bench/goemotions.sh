#!/usr/bin/env bash
# GoEmotions end to end on a CPU (28 labels, 48,836 train + 5,427 test texts), every figure of docs/goemotions.md's
# GoEmotions table: the data, the TF-IDF ten-fold timing, the three blend members on one 5-fold file (the MiniLM
# fine-tune in two parallel fold processes), their blend, the threshold-rule study, and the submissions copied to
# bench/results/. Finished runs and folds are reused, so a killed run resumes where it stopped.
#   bash bench/goemotions.sh [GoEmotions TSV folder, default ../shared/data/goemotions]
# Each step's wall time and peak memory (largest process, GNU time) are appended to logs/goemotions_times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${1:-../shared/data/goemotions}
D=data/goemotions
mkdir -p logs bench/results
TIMES=logs/goemotions_times.txt
export MODELS_DIR=${MODELS_DIR:-$(bash bench/models_dir.sh)}  # the configs' hub ids, from local copies
source bench/lib.sh
[ -f $D/train.csv ] || $PY -m src.data goemotions "$SRC" $D
timed tfidf-k10 $PY bench/baseline.py --data-dir $D exp=goemotions-tfidf-k10 folds.n_folds=10 \
  thresholds.min_one=true
timed tfidf $PY -m src run --config configs/goemotions/tfidf.yaml
timed probe-minilm $PY -m src run --config configs/goemotions/probe_minilm.yaml
M=configs/goemotions/minilm-l6.yaml
timed minilm-folds-0-2 env OMP_NUM_THREADS=1 $PY -m src.train --config $M --folds 0-2 &
first=$!
sleep 60  # the first process makes the fold file and records the run; then the second joins
timed minilm-folds-3-4 env OMP_NUM_THREADS=1 $PY -m src.train --config $M --folds 3-4
wait $first
timed minilm-predict $PY -m src run --config $M
timed blend $PY -m src.ensemble goemotions-tfidf goemotions-probe-minilm goemotions-minilm-l6 --out goemotions-blend \
  data.data_dir=$D
$PY bench/thresholds.py goemotions-tfidf goemotions-probe-minilm goemotions-minilm-l6 goemotions-blend \
  --exclusive neutral
for exp in goemotions-tfidf-k10 goemotions-tfidf goemotions-probe-minilm goemotions-minilm-l6 goemotions-blend; do
  cp submissions/$exp.csv bench/results/$exp.csv
done
cat logs/goemotions_times.txt
