#!/usr/bin/env bash
# Download the wheels the GPU scripts need on a machine that has torch, numpy and scipy but no
# network, into .whl/ (git-ignored), for Python 3.12 on x86-64: monai and SimpleITK for
# benchmarks/inference_gpu.py and gpu_agreement.py; nibabel (MONAI's NIfTI reader) and cc3d
# (validation metrics) as well for benchmarks/training_gpu.sh (TRAINING=1).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl monai==1.6.1 SimpleITK==2.5.7
if [ "${TRAINING:-0}" = 1 ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl nibabel==5.4.2 connected-components-3d==4.1.1
fi
ls -la .whl
