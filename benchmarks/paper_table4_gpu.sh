#!/usr/bin/env bash
# The paper's Table 4 against Table 3 on a GPU machine, in one call: two demo-wide networks
# warm-started from the shipped fold 0 and trained through the sliding window at overlap 0 and at
# 0.25 (64^3 windows over 128^3 crops: 8 against 27 windows, the same seed, data and steps), then
# both scored at inference overlap 0 / 0.25 / 0.5 / 0.75 and with a plain inferer on held-out
# phantoms. Writes $OUT/paper_ablation_table4.json and .png (copy them to docs/benchmarks/ and docs/).
# Phantoms are made on the machine (training.phantoms; seeds 0-39 to train, 50000-... to score).
#
#   OUT=/some/folder bash benchmarks/paper_table4_gpu.sh
# Knobs: EPOCHS [16]  ITERS [25]  TEST_SEEDS [50000-50005]  LR [1e-4]  DEVICE [cuda]  WORK [/tmp/table4]
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a results folder}
EPOCHS=${EPOCHS:-16}
ITERS=${ITERS:-25}
TEST_SEEDS=${TEST_SEEDS:-50000-50005}
LR=${LR:-1e-4}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/table4}
mkdir -p "$OUT" "$WORK"
started=$(date +%s)
python3 -m benchmarks.paper_ablation --work "$WORK" --variants window-overlap-0 window-overlap-0.25 \
    --preset demo-wide --init-from weights/fold0.pt --epochs "$EPOCHS" --iters "$ITERS" --lr "$LR" \
    --test-seeds "$TEST_SEEDS" --threads 4 --device "$DEVICE" \
    --json "$OUT/paper_ablation_table4.json" --plot "$OUT/paper_ablation_table4.png"
echo "table 4: $(($(date +%s) - started)) s"
