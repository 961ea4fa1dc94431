#!/usr/bin/env bash
# A cohort through process.py on the CPU: one process (2 threads) against torchrun's two ranks
# (gloo, 1 thread each) on the same whole-body phantoms; prints both wall times and compares the
# masks. On two cores expect the split to show, not a speed-up.
#
#   bash benchmarks/cohort_cpu.sh            # CASES=8 WORK=/tmp/cohort_cpu CROP=exact WEIGHTS=weights
#
# The split, not the networks, is what this measures: WEIGHTS=weights/fold0.pt (one network) makes
# eight whole-body cases fit in minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${CASES:-8}
WORK=${WORK:-/tmp/cohort_cpu}
CROP=${CROP:-exact}
WEIGHTS=${WEIGHTS:-weights}
python -m training.phantoms --out "$WORK/data" --seeds "60000-$((60000 + CASES - 1))" --layout gc \
    --workers 2 --skip-existing
rm -rf "$WORK/one" "$WORK/two"
start=$SECONDS
OMP_NUM_THREADS=2 python process.py --input "$WORK/data" --output "$WORK/one" --device cpu --time-budget 0 \
    --crop "$CROP" --weights "$WEIGHTS"
one=$((SECONDS - start))
start=$SECONDS
OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc_per_node 2 process.py \
    --input "$WORK/data" --output "$WORK/two" --device cpu --time-budget 0 --crop "$CROP" \
    --weights "$WEIGHTS"
two=$((SECONDS - start))
python -m scripts.compare_masks "$WORK/two/images/automated-petct-lesion-segmentation" \
    "$WORK/one/images/automated-petct-lesion-segmentation" --min-dice 1.0
echo "cases $CASES, crop $CROP, weights $WEIGHTS: one process ${one} s, torchrun 2 ranks ${two} s"
