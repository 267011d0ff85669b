#!/usr/bin/env bash
# Prepare everything the one GPU device call carries, and print the total (limit: 64 MiB for the
# working tree + carried paths):
#   .whl/        wheels the GPU machine lacks (benchmarks/gpu_wheels.sh)
#   .gpudata/    real clips for the accuracy gate (benchmarks/gpu_data.sh)
#   .gpumodels/  the packages the check runs: fight and ped2-anomaly (their trunks inside)
# Then the device call (one run, timeout_s 420; 5-6 minutes of work):
#   command: bash benchmarks/gpu_check.sh --models .gpumodels --data .gpudata
#   carry:   [".whl", ".gpudata", ".gpumodels"]
# Results: one JSON + Markdown named after the GPU in $OUT (returned by the device tool).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-build/models}
[ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 || bash benchmarks/gpu_wheels.sh
bash benchmarks/gpu_data.sh
rm -rf .gpumodels
mkdir -p .gpumodels
for pkg in fight ped2-anomaly; do
  [ -f "$MODELS/$pkg/manifest.json" ] || { echo "missing $MODELS/$pkg: run 'make models' first" >&2; exit 2; }
  cp -r "$MODELS/$pkg" .gpumodels/
done
rm -f .gpumodels/*/precision_gate.json  # the check measures the gate afresh
echo "carried:"
du -sh .whl .gpudata .gpumodels
tree_mib=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .gpudata .gpumodels | tail -1 | cut -f1)
echo "working tree (tracked files): $((tree_mib / 1048576)) MiB; carried: $((carried / 1048576)) MiB;" \
     "total $(((tree_mib + carried) / 1048576)) MiB of 64"
