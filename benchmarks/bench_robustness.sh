#!/usr/bin/env bash
# Clean and degraded EER of the demo's GE2E model trained without and with augmentation (the two trials of
# sweeps/robustness.py, run as two `sourcetrace train` runs), each scored by `sourcetrace evaluate --degrade`
# on the demo corpus's eval split, then tabulated by benchmarks/robustness_table.py.
#   bash benchmarks/bench_robustness.sh [DATA_ROOT (default data/demo)] [RUNS (default runs)]
# EPOCHS=N sets both runs' schedule (default 40, as sweeps/robustness.py), SEED=N their seed (default 0);
# PARALLEL=1 trains and evaluates the two runs side by side, one core each.
set -euo pipefail
ROOT="${1:-data/demo}"
RUNS="${2:-runs}"
EPOCHS="${EPOCHS:-40}"
SEED="${SEED:-0}"
PY="${PYTHON:-.venv/bin/python}"
export SOURCETRACE_CACHE="${SOURCETRACE_CACHE:-$RUNS/cache}"  # decoded banks and rendered degradations
COMMON=(--set model.channels=8 --set features.instance_norm=false --set model.frequency=flatten
        --set model.pooling=asp --set loss.name=ge2e --set sampler.name=balanced --set sampler.per_class=2
        --set train.batch_size=24 --set train.lr=2e-3 --set train.warmup_epochs=2 --set train.epochs=$EPOCHS
        --set train.seed=$SEED --set train.eval_every=4 --set data.crop_seconds=2.0 --set data.eval_seconds=3.0
        --set data.short_clips=pad --set train.num_threads=1)
AUGMENT=(--set augment.mp3_32=0.08 --set augment.opus_16=0.08 --set augment.amr_nb=0.08
         --set augment.replay=0.08 --set augment.noise=0.1)
DEGRADE=mp3_32,opus_16,amr_nb,replay,mp3_64,gsm  # the last two are never seen in training
one() {  # train and evaluate one run: NAME [extra train args]
    local run="$1"; shift
    time nice -n 10 "$PY" -m sourcetrace.cli train --root "$ROOT" --out "$RUNS/$run" "${COMMON[@]}" "$@"
    time nice -n 10 "$PY" -m sourcetrace.cli evaluate --model "$RUNS/$run" --root "$ROOT" --degrade "$DEGRADE" \
        --out "$RUNS/$run/evaluate_degraded"
}
if [[ "${PARALLEL:-0}" == 1 ]]; then
    mkdir -p "$RUNS"
    one robust_off > "$RUNS/robust_off.log" 2>&1 &
    off=$!
    one robust_on "${AUGMENT[@]}" > "$RUNS/robust_on.log" 2>&1 &
    on=$!
    wait "$off"
    wait "$on"
else
    one robust_off
    one robust_on "${AUGMENT[@]}"
fi
"$PY" benchmarks/robustness_table.py "$RUNS/robust_off/evaluate_degraded/metrics.json" \
    "$RUNS/robust_on/evaluate_degraded/metrics.json"
