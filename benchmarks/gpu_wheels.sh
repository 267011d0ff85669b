#!/usr/bin/env bash
# Download into .whl/ the wheels the GPU machine lacks (it has no network): Python 3.12,
# manylinux x86_64. Versions are the ones this project is tested with (see the local .venv).
# The GPU machine already has torch (CUDA), onnx, onnxruntime (CPU build), OpenCV, numpy,
# prometheus-client, pyyaml, scikit-learn, pytest. onnxruntime-gpu (~200+ MB) does not fit the
# 64 MiB a device call may carry, so ort-cuda / ort-tensorrt cannot be proven there (their tests
# skip naming onnxruntime-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 pyzmq==27.3.0 onnx2torch==1.5.15
)
mkdir -p .whl
for w in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$w"
done
ls -l .whl
du -sh .whl
