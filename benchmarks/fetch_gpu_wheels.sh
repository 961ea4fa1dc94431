#!/usr/bin/env bash
# Download the wheels benchmarks/inference_gpu.py needs on a GPU machine that has torch, numpy and
# scipy but no network (monai, SimpleITK), into .whl/ (git-ignored), for Python 3.12 on x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl monai==1.6.1 SimpleITK==2.5.7
ls -la .whl
