# Helpers the CPU recipes (bench/tricks.sh, bench/decoders.sh) share; source it after setting PY, D and TIMES.
#   timed NAME command...             run, then append its wall time and peak memory (GNU time) to $TIMES
#   finetune CONFIG EXP [key=value]   10 folds in two 1-thread processes (one per core), then predict;
#                                     LANE2="key=value ..." adds settings to the second process alone (e.g.
#                                     model.gradient_checkpointing=true, so that two large models fit in memory)
timed() {
  local name=$1
  shift
  /usr/bin/time -f "$name: wall %e s, peak memory %M KB" -a -o "$TIMES" "$@"
}
finetune() {
  local config=$1 exp=$2
  shift 2
  local args=(--config "$config" "exp=$exp" "$D" "$@") lane2
  read -ra lane2 <<< "${LANE2:-}"
  timed "$exp-folds-0-4" env OMP_NUM_THREADS=1 $PY -m src.train --folds 0-4 "${args[@]}" &
  local first=$!
  sleep 60  # the first process makes the fold file and records the run; then the second joins
  timed "$exp-folds-5-9" env OMP_NUM_THREADS=1 $PY -m src.train --folds 5-9 "${args[@]}" "${lane2[@]}"
  wait $first
  timed "$exp-predict" $PY -m src run "${args[@]}"
}
