#!/usr/bin/env bash
# Train the five demo folds at once on one GPU machine and leave the exported ensemble in OUT.
#
# For a lent GPU with a short time limit: phantoms are made there (one process per case), the
# folds train side by side (the demo network uses under 1 GiB of GPU memory and a fraction of its
# compute, so five processes share one card), and only the weights come back (5 x 6 MB).
#
#   OUT=/some/folder bash scripts/train_demo_gpu.sh
# Knobs: CASES [120]  BUDGET_MIN [6 per fold]  PRESET [demo]  FOLDS ["0 1 2 3 4"]  WORKERS [2 per fold]
#        INIT [weights, when weights/fold0.pt exists: warm start]  SPLITS [weights/splits.json if present]
#        SHAPE [autoPET's 400 x 400 x N]  DEVICE [cuda]  WORK [/tmp/train_demo_gpu]
# Afterwards, on the CPU machine: copy OUT/weights/* into weights/ and score them with
# `python -m training revalidate` / `scripts/evaluate_heldout.py` (docs/training.md).
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
CASES=${CASES:-120}
BUDGET_MIN=${BUDGET_MIN:-6}
PRESET=${PRESET:-demo}
FOLDS=${FOLDS:-0 1 2 3 4}
WORKERS=${WORKERS:-2}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/train_demo_gpu}
if [ -z "${INIT+x}" ]; then INIT=$([ -f weights/fold0.pt ] && echo weights || echo ""); fi
if [ -z "${SPLITS+x}" ]; then SPLITS=$([ -f weights/splits.json ] && echo weights/splits.json || echo ""); fi
SHAPE_ARGS=()
[ -n "${SHAPE:-}" ] && SHAPE_ARGS=(--shape $SHAPE --spacing 4 4 4)
mkdir -p "$OUT" "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

started=$(date +%s)
pids=()
for ((i = 0; i < CASES; i++)); do  # seeds 0..CASES-1, as scripts/train_demo.sh; made once per WORK
    [ -d "$WORK/data/PHANTOM$(printf %05d "$i")" ] && continue
    python3 -m training.phantoms --out "$WORK/data" --cases 1 --seed "$i" --layout tcia "${SHAPE_ARGS[@]}" \
        >"$WORK/phantom_$i.log" 2>&1 &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$(nproc)" ]; then wait "${pids[0]}" || exit 1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
echo "phantoms: $CASES in $(($(date +%s) - started)) s"

started=$(date +%s)
python3 -m training prepare --data "$WORK/data" --layout tcia --preset "$PRESET" --out "$WORK/run" 2>&1 | tail -n 1
echo "prepare: $(($(date +%s) - started)) s"
if [ -n "$SPLITS" ]; then  # keep the shipped folds (warm-started networks must not see their val cases)
    python3 -m training splits --data "$WORK/data" --out "$WORK/run/splits.json" --extend "$SPLITS" || exit 1
else
    python3 -m training splits --data "$WORK/data" --out "$WORK/run/splits.json" || exit 1
fi

init_args=()
[ -n "$INIT" ] && init_args=(--init-from "$INIT")
started=$(date +%s)
pids=()
for k in $FOLDS; do
    python3 -m training fit --data "$WORK/data" --layout tcia --preset "$PRESET" --fold "$k" \
        --splits "$WORK/run/splits.json" --out "$WORK/run" --time-budget-min "$BUDGET_MIN" --epochs 100000 \
        --val-every 100000 --num-workers "$WORKERS" --device "$DEVICE" --quiet "${init_args[@]}" \
        >"$OUT/fit_fold$k.log" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
echo "folds: $FOLDS trained side by side in $(($(date +%s) - started)) s, $failed failed"
for k in $FOLDS; do
    tail -n 1 "$OUT/fit_fold$k.log"
    cp "$WORK/run/fold$k/metrics.csv" "$OUT/metrics_fold$k.csv" 2>/dev/null
done
[ "$failed" -eq 0 ] || exit 1
python3 -m training export --runs "$WORK/run" --out "$OUT/weights" --which last --folds "$(echo $FOLDS | tr ' ' ,)" \
    --description "$PRESET preset, folds $FOLDS trained side by side on one GPU for $BUDGET_MIN min each on $CASES phantoms (seeds 0-$((CASES - 1)))${INIT:+, warm-started from $INIT}" \
    || exit 1
cp "$WORK/run/splits.json" "$OUT/weights/splits.json"
ls -la "$OUT/weights"
