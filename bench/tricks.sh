#!/usr/bin/env bash
# The CPU-only recipe on the emotion data and each trick's gain, measured on OOF against the same members without it
# (docs/tricks.md): the five members, their blend (the teacher),
# every member again with the teacher's pseudo-labels (per fold: honest OOF), then blends and stacks of both sets,
# then MiniLM started from a GoEmotions fine-tune (intermediate-task transfer) and the blend with it.
# Finished runs and folds are reused, so a killed run resumes where it stopped.
#   bash bench/tricks.sh [competition folder, default ../shared/data/emotion-detection]
# Each step's wall time and peak memory (largest process, GNU time) are appended to logs/tricks_times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
E=${1:-../shared/data/emotion-detection}
D=data.data_dir=$E
mkdir -p logs bench/results
TIMES=logs/tricks_times.txt
export MODELS_DIR=${MODELS_DIR:-$(bash bench/models_dir.sh)}  # the configs' hub ids, from local copies
source bench/lib.sh
minilm() {  # minilm EXP [key=value ...]: MiniLM-L6, 10 folds x 500 steps, 64 tokens
  local exp=$1
  shift
  finetune configs/minilm-l6.yaml "$exp" train.max_steps=500 train.eval_every=100 model.max_length=64 "$@"
}

# members and their blend: the teacher
for c in tfidf tfidf_cnb probe_minilm probe_mpnet; do timed $c $PY -m src run --config configs/$c.yaml "$D"; done
minilm minilm-l6-cpu500
MEMBERS="tfidf tfidf_cnb probe_minilm probe_mpnet minilm-l6-cpu500"
timed blend_cpu $PY -m src.ensemble $MEMBERS --out blend_cpu "$D"
timed stack_cpu $PY -m src stack $MEMBERS --out stack_cpu "$D"

# pseudo-labels from the teacher: half the test texts, most certain first, 0/1 at the teacher's thresholds
T="teacher.exp=blend_cpu teacher.keep=0.5 teacher.mode=hard"
for c in tfidf tfidf_cnb probe_minilm probe_mpnet; do
  timed $c-pl $PY -m src run --config configs/$c.yaml "$D" exp=$c-pl $T
done
PL="tfidf-pl tfidf_cnb-pl probe_minilm-pl probe_mpnet-pl"
timed blend_cpu_pl $PY -m src.ensemble $PL minilm-l6-cpu500 --out blend_cpu_pl "$D"
timed stack_cpu_pl $PY -m src stack $PL minilm-l6-cpu500 --out stack_cpu_pl "$D"
minilm minilm-l6-cpu500-pl $T   # the MiniLM student (an hour on 2 cores)
timed blend_cpu_pl5 $PY -m src.ensemble $PL minilm-l6-cpu500-pl --out blend_cpu_pl5 "$D"
timed blend_cpu_both $PY -m src.ensemble $MEMBERS minilm-l6-cpu500-pl --out blend_cpu_both "$D"

# intermediate-task transfer: MiniLM fine-tuned on GoEmotions first (bench/goemotions.sh, ~2 h on 2 cores), then
# on these labels (configs/minilm-l6-from-goemotions.yaml holds the same settings); two seeds; a probe on its features
GE=${GE:-checkpoints/goemotions-minilm-l6/fold0/step3600}
[ -d "$GE" ] || bash bench/goemotions.sh
minilm minilm-l6-ge500 model.name_or_path=$GE
minilm minilm-l6-ge500-s43 model.name_or_path=$GE train.seed=43
minilm minilm-l6-ge500-f1s44 model.name_or_path=${GE/fold0/fold1} train.seed=44   # GoEmotions fold 1's checkpoint
timed probe_minilm_ge $PY -m src run --config configs/probe_minilm.yaml "$D" exp=probe_minilm_ge model.name_or_path=$GE \
  model.max_length=64
GEM="minilm-l6-ge500 minilm-l6-ge500-s43 minilm-l6-ge500-f1s44 probe_minilm_ge"
timed blend_ge $PY -m src.ensemble $MEMBERS minilm-l6-cpu500-pl $GEM --out blend_ge "$D"
timed blend_ge_equal $PY -m src.ensemble $MEMBERS minilm-l6-cpu500-pl $GEM --equal --out blend_ge_equal "$D"
timed stack_ge $PY -m src stack $MEMBERS minilm-l6-cpu500-pl $GEM --out stack_ge "$D"

# a longer schedule (1,000 steps, GoEmotions fold 2's checkpoint), and distillation: the GoEmotions-started MiniLM
# learns the equal blend's soft probabilities on every test text (fold k from the blend's fold-k predictions)
minilm minilm-l6-ge1000-f2s46 model.name_or_path=${GE/fold0/fold2} train.seed=46 train.max_steps=1000 \
  train.eval_every=200
minilm minilm-l6-ge500-kd model.name_or_path=$GE teacher.exp=blend_ge_equal teacher.mode=soft teacher.keep=1.0
timed blend_ge12_equal $PY -m src.ensemble $MEMBERS minilm-l6-cpu500-pl $GEM minilm-l6-ge1000-f2s46 minilm-l6-ge500-kd \
  --equal --out blend_ge12_equal "$D"

# text normalization (data.normalize=tweet: emojis spelled out, HTML entities, mentions, links) on every member that
# reads the texts again cheaply (TF-IDF, the probes) and the three GoEmotions-started 500-step MiniLM runs; then the
# twelve-member equal blend with them in place of their raw twins
N=data.normalize=tweet
for c in tfidf tfidf_cnb probe_minilm probe_mpnet; do timed $c-tw $PY -m src run --config configs/$c.yaml "$D" exp=$c-tw $N; done
timed probe_minilm_ge-tw $PY -m src run --config configs/probe_minilm.yaml "$D" exp=probe_minilm_ge-tw \
  model.name_or_path=$GE model.max_length=64 $N
minilm minilm-l6-ge500-tw model.name_or_path=$GE $N
minilm minilm-l6-ge500-s43-tw model.name_or_path=$GE train.seed=43 $N
minilm minilm-l6-ge500-f1s44-tw model.name_or_path=${GE/fold0/fold1} train.seed=44 $N
TW="tfidf-tw tfidf_cnb-tw probe_minilm-tw probe_mpnet-tw minilm-l6-cpu500 minilm-l6-cpu500-pl minilm-l6-ge500-tw"
TW="$TW minilm-l6-ge500-s43-tw minilm-l6-ge500-f1s44-tw probe_minilm_ge-tw minilm-l6-ge1000-f2s46 minilm-l6-ge500-kd"
timed blend_tw12_equal $PY -m src.ensemble $TW --equal --out blend_tw12_equal "$D"

# a bigger backbone on the CPU: all-mpnet-base-v2 fine-tuned in bf16 autocast (AMX), 450 steps, normalized texts
# (configs/mpnet-base-cpu.yaml); then with the twelve: thirteen equal members, and the twelve-member blend as one
# member beside mpnet with searched weights (the nested estimate refits the weights without each fold: honest)
finetune configs/mpnet-base-cpu.yaml mpnet-base-cpu
timed blend_tw13_equal $PY -m src.ensemble $TW mpnet-base-cpu --equal --out blend_tw13_equal "$D"
timed blend_tw12_mpnet $PY -m src.ensemble blend_tw12_equal mpnet-base-cpu --out blend_tw12_mpnet "$D"

for exp in blend_cpu stack_cpu blend_cpu_pl stack_cpu_pl blend_cpu_pl5 blend_cpu_both blend_ge blend_ge_equal stack_ge blend_ge12_equal blend_tw12_equal \
    blend_tw13_equal blend_tw12_mpnet; do
  $PY -m src validate submissions/$exp.csv "$E/sample_submission.csv"
  cp submissions/$exp.csv bench/results/$exp.csv
done
cat logs/tricks_times.txt
