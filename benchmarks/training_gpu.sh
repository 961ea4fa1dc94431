#!/usr/bin/env bash
# Time the training recipe on a GPU machine: a few epochs of `python -m training fit` on phantoms
# made there, with GPU memory sampled by nvidia-smi. Prints seconds per optimiser step (from the
# run's metrics.csv) and the peak memory nvidia-smi saw, per preset and training forward pass: the
# paper preset's own (128^3 sliding window at overlap 0.25 over the 224^3 crop, as the authors
# trained) and the whole crop at once (--train-inferer simple), for the cost of the window.
#
#   OUT=/some/folder PRESETS="paper demo" bash benchmarks/training_gpu.sh
# Knobs: CASES [10]  SHAPE ["400 400 326"]  EPOCHS [3]  ITERS [20]  WORKERS [8]  DEVICE [cuda]
#        TRAIN_INFERERS ["sliding simple"]
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
PRESETS=${PRESETS:-paper demo}
CASES=${CASES:-10}
SHAPE=${SHAPE:-400 400 326}
EPOCHS=${EPOCHS:-3}
ITERS=${ITERS:-20}
WORKERS=${WORKERS:-8}
DEVICE=${DEVICE:-cuda}
TRAIN_INFERERS=${TRAIN_INFERERS:-sliding simple}
WORK=${WORK:-/tmp/training_gpu}
rm -rf "$WORK"  # no stale phantoms, splits or runs from an earlier call
mkdir -p "$OUT" "$WORK"

started=$(date +%s)
# one command, a process per core: phantoms are independent
python3 -m training.phantoms --out "$WORK/data" --seeds "9000-$((9000 + CASES - 1))" --layout tcia \
    --shape $SHAPE --workers "$(nproc)" >"$WORK/phantoms.log" 2>&1 || { tail -n 20 "$WORK/phantoms.log"; exit 1; }
echo "phantoms: $CASES ($SHAPE) in $(($(date +%s) - started)) s"

for preset_and_inferer in $(for p in $PRESETS; do for i in $TRAIN_INFERERS; do echo "$p:$i"; done; done); do
    preset=${preset_and_inferer%%:*}
    inferer=${preset_and_inferer##*:}
    name="${preset}_$inferer"
    run="$WORK/run_$name"
    mem="$OUT/gpu_memory_$name.csv"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 >"$mem" &
        smi=$!
    fi
    started=$(date +%s)
    python3 -m training fit --data "$WORK/data" --layout tcia --preset "$preset" --fold 0 \
        --splits "$WORK/splits.json" --out "$run" --epochs "$EPOCHS" --iters-per-epoch "$ITERS" \
        --val-every "$EPOCHS" --val-max-cases 1 --num-workers "$WORKERS" --device "$DEVICE" --quiet \
        --train-inferer "$inferer" \
        2>&1 | tail -n 20
    echo "fit rc=${PIPESTATUS[0]} in $(($(date +%s) - started)) s"
    [ -n "${smi:-}" ] && kill "$smi" 2>/dev/null
    cp "$run/fold0/metrics.csv" "$OUT/metrics_$name.csv" 2>/dev/null
    python3 - "$run/fold0/metrics.csv" "$mem" "$name" <<'PY'
import csv, sys
from pathlib import Path
rows = list(csv.DictReader(open(sys.argv[1]))) if Path(sys.argv[1]).exists() else []
print(f"{sys.argv[3]}: metrics columns {list(rows[0]) if rows else 'none'}")
for r in rows:
    print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
mem = Path(sys.argv[2])
if mem.exists() and mem.stat().st_size:
    used = [float(line.split(",")[1]) for line in mem.read_text().splitlines() if "," in line]
    print(f"{sys.argv[3]}: peak GPU memory seen by nvidia-smi {max(used) / 1024:.2f} GiB")
PY
done
