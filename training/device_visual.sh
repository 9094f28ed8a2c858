#!/usr/bin/env bash
# The face-model runs for a lent GPU machine, all in parallel from one pack
# (see training/device_visual.py), each stopped by its own deadline; every
# run's log, model and probabilities come back as $OUT/<run>.tgz.
#
#   MINUTES=6 bash training/device_visual.sh        (PACK, WHEELS and OUT may be set too)
#
# Keras, namex and optree travel as wheels in $WHEELS: the GPU machine has no
# Keras. On a CPU with Keras installed the script runs as it is (tests use it
# with a tiny pack and MINUTES=0).
set -u
cd "$(dirname "$0")/.."
PACK=${PACK:-.device/pack/faces.npz}
WHEELS=${WHEELS:-.whl}
MINUTES=${MINUTES:-6}
OUT=${OUT:-runs/device}
EPOCHS_SCALE=${EPOCHS_SCALE:-1}
WORK=${WORK:-runs}
RUNS_ONLY=${RUNS_ONLY:-}  # space-separated run names (default: all)
BACKEND=${BACKEND:-}      # one Keras backend for every run (default: each run's own)
# IRV2_INT8=1: the InceptionResNetV2 runs also bring back their weights as int8 (about 53 MiB each, so run one
# alone, e.g. RUNS_ONLY=irv2_jax IRV2_INT8=1 MINUTES=7 EPOCHS_SCALE=0.5, inside one call's 10 minutes);
# `python -m training.device_visual restore RUN --out MODEL.keras` rebuilds them here.
IRV2_KEEP=$([ "${IRV2_INT8:-0}" = 1 ] && echo --keep-int8)
mkdir -p "$OUT" "$WORK/device_logs"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# Each run gets its deadline plus time to evaluate and save; past that it is killed.
HARD=$(awk "BEGIN{print int($MINUTES*60+150)}")

run() {  # run NAME BACKEND ARGS...
    local name=$1 backend=${BACKEND:-$2}
    shift 2
    if [ -n "$RUNS_ONLY" ] && [[ " $RUNS_ONLY " != *" $name "* ]]; then return; fi
    KERAS_BACKEND=$backend timeout "$HARD" "$PY" -m training.device_visual train --pack "$PACK" \
        --out "$WORK/device_runs/$name" --minutes "$MINUTES" "$@" >"$WORK/device_logs/$name.log" 2>&1
    echo "$name: exit $?"
}

e() { awk "BEGIN{print int($1*$EPOCHS_SCALE)+1}"; }

run compact_soft jax --targets soft --epochs "$(e 24)" --keep-model &
run compact_majority jax --targets majority --label-smoothing 0.1 --epochs "$(e 24)" --keep-model &
run compact_soft_seed2 jax --targets soft --epochs "$(e 24)" --seed 2 --keep-model &
run finetune_soft jax --targets soft --init models/visual_default.keras --learning-rate 2e-4 \
    --epochs "$(e 10)" --keep-model &
run irv2_torch torch --backbone inception_resnet_v2 --input-size 96 --learning-rate 3e-4 \
    --batch-size 128 --epochs "$(e 12)" $IRV2_KEEP &
run irv2_jax jax --backbone inception_resnet_v2 --input-size 96 --learning-rate 3e-4 \
    --batch-size 128 --epochs "$(e 12)" $IRV2_KEEP &
wait
for dir in "$WORK"/device_runs/*/; do
    name=$(basename "$dir")
    # never the checkpoints of a run killed at its hard limit: they can be gigabytes
    (cd "$WORK" && tar czf - --exclude=checkpoints device_runs/"$name" device_logs/"$name".log) >"$OUT/$name.tgz"
done
tar czf "$OUT/logs.tgz" -C "$WORK" device_logs
ls -la "$OUT"
