#!/usr/bin/env bash
# Train the five demo folds at once on one GPU machine and leave the exported ensemble in OUT.
#
# For a lent GPU with a short time limit: phantoms are made there (one process per core), the
# folds train side by side (the demo network uses under 1 GiB of GPU memory and a fraction of its
# compute, so five processes share one card), and only the weights come back (5 x 18 MB for demo-wide).
#
#   OUT=/some/folder bash scripts/train_demo_gpu.sh
# Knobs: CASES [the cases of SPLITS, else 120]  BUDGET_MIN [6 per fold]  PRESET [INIT's, else demo]  FOLDS ["0 1 2 3 4"]  WORKERS [2 per fold]
#        INIT [weights, when weights/fold0.pt exists: warm start; PRESET then defaults to the preset in INIT's
#        manifest.json; to warm-start a wider preset from narrower weights, first
#        `python -m training widen --weights OLD --preset demo-wide --out W`, then INIT=W]  SPLITS [weights/splits.json if present;
#        required with INIT]  SHAPE [autoPET's 400 x 400 x N at 2.04 x 2.04 x 3 mm; "X Y Z" gives that
#        grid at 4 mm, for tests]  RANGES [wide: the phantom profile, docs/phantoms.md#ranges]  DEVICE [cuda]
#        WORK [/tmp/train_demo_gpu]
# Afterwards, on the CPU machine: copy OUT/weights/* into weights/ and score them with
# `python -m training revalidate` / `scripts/evaluate_heldout.py` (docs/training.md).
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:?set OUT to a results folder}
BUDGET_MIN=${BUDGET_MIN:-6}
FOLDS=${FOLDS:-0 1 2 3 4}
FOLDS=${FOLDS//,/ }
WORKERS=${WORKERS:-2}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/train_demo_gpu}
if [ -z "${INIT+x}" ]; then INIT=$([ -f weights/fold0.pt ] && echo weights || echo ""); fi
if [ -z "${PRESET:-}" ]; then  # a warm start trains the network INIT holds (its manifest names the preset)
    PRESET=$(python3 -c 'import json, sys
path = sys.argv[1] + "/manifest.json"
try: print(json.load(open(path)).get("preset") or "demo")
except FileNotFoundError: print("demo")
except (OSError, ValueError, AttributeError) as err: sys.exit(f"error: INIT: {path}: unreadable manifest ({err})")' \
        "${INIT:-/nonexistent}") || exit 2
fi
if [ -z "${SPLITS+x}" ]; then SPLITS=$([ -f weights/splits.json ] && echo weights/splits.json || echo ""); fi
if [ -n "$INIT" ] && [ -z "$SPLITS" ]; then
    echo "error: INIT=$INIT needs SPLITS (the folds those networks trained with); new folds would leak" \
        "their training cases into validation" >&2
    exit 2
fi
if [ -z "${CASES:-}" ]; then  # as many phantoms as the folds name (seeds 0..N-1), so --extend finds them all
    if [ -n "$SPLITS" ]; then
        CASES=$(python3 -c 'import sys; from training.splits import SplitError, cases_of, load_splits
try: print(len(cases_of(load_splits(sys.argv[1]))))
except SplitError as err: sys.exit(f"error: SPLITS: {err}")' "$SPLITS") || exit 2
    else
        CASES=120
    fi
fi
SHAPE_ARGS=()
[ -n "${SHAPE:-}" ] && { read -r -a dims <<<"$SHAPE"; SHAPE_ARGS=(--shape "${dims[@]}" --spacing 4 4 4); }  # tests
RANGES=${RANGES:-wide}
DATA="$WORK/data-$RANGES-${SHAPE:-autopet}"
DATA=${DATA// /x}
mkdir -p "$OUT" "$DATA"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
extra=$(find "$DATA" -mindepth 1 -maxdepth 1 -name 'PHANTOM*' | sort | tail -n +$((CASES + 1)) | head -n 1)
if [ -n "$extra" ]; then
    echo "error: $DATA holds more than CASES=$CASES phantoms ($extra); use another WORK" >&2
    exit 2
fi

started=$(date +%s)
# seeds 0..CASES-1, as scripts/train_demo.sh; made once per WORK, one process per core; each case is
# renamed into place when complete, so a phantom killed mid-write never looks like a case
python3 -m training.phantoms --out "$DATA" --seeds "0-$((CASES - 1))" --layout tcia --skip-existing \
    --ranges "$RANGES" --workers "$(nproc)" ${SHAPE_ARGS[@]+"${SHAPE_ARGS[@]}"} >"$WORK/phantoms.log" 2>&1 \
    || { tail -n 5 "$WORK/phantoms.log"; exit 1; }
echo "phantoms: $CASES in $(($(date +%s) - started)) s"

started=$(date +%s)
python3 -m training prepare --data "$DATA" --layout tcia --preset "$PRESET" --out "$WORK/run" --workers "$(nproc)" \
    2>&1 | tail -n 1
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "error: prepare failed" >&2; exit 1; }
echo "prepare: $(($(date +%s) - started)) s"
if [ -n "$SPLITS" ]; then  # keep the shipped folds (warm-started networks must not see their val cases)
    python3 -m training splits --data "$DATA" --out "$WORK/run/splits.json" --extend "$SPLITS" || exit 1
else
    python3 -m training splits --data "$DATA" --out "$WORK/run/splits.json" || exit 1
fi

init_args=()
[ -n "$INIT" ] && init_args=(--init-from "$INIT")
started=$(date +%s)
pids=()
for k in $FOLDS; do
    python3 -m training fit --data "$DATA" --layout tcia --preset "$PRESET" --fold "$k" \
        --splits "$WORK/run/splits.json" --out "$WORK/run" --time-budget-min "$BUDGET_MIN" --epochs 100000 \
        --val-every 100000 --num-workers "$WORKERS" --device "$DEVICE" --quiet ${init_args[@]+"${init_args[@]}"} \
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
python3 -m training export --runs "$WORK/run" --out "$OUT/weights" --which last --folds "$(xargs <<<"$FOLDS" | tr ' ' ,)" \
    --description "$PRESET preset, folds $FOLDS trained side by side on one GPU for $BUDGET_MIN min each on $CASES $RANGES phantoms (seeds 0-$((CASES - 1)))${INIT:+, warm-started from $INIT}" \
    || exit 1
cp "$WORK/run/splits.json" "$OUT/weights/splits.json"
ls -la "$OUT/weights"
