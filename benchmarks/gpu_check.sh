#!/usr/bin/env bash
# The prepared GPU check: one call on the GPU machine, end to end in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh --models .gpumodels --data .gpudata          (on the GPU machine)
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --device cpu --quick --no-wheels \
#       --models .gpumodels --data .gpudata                              (the plumbing, on a CPU machine)
#
# Prepare the carried folders first with `bash benchmarks/gpu_bundle.sh` (wheels, data subset,
# trimmed packages; prints the total against the 64 MiB limit). Device call:
#   command: bash benchmarks/gpu_check.sh --models .gpumodels --data .gpudata
#   carry:   [".whl", ".gpudata", ".gpumodels"]        timeout_s: 420
#
# Phases, each under its own time cap (and all under --budget seconds, default 360), each going on past a
# failed one: install carried wheels -> machine/engine-auto info -> `pytest -m gpu` -> engine
# benchmark -> accuracy gate on real clips -> streams end to end -> report. Writes one JSON + one
# Markdown named after the GPU (and gpu-check.log) into $OUT if set, else benchmarks/results/.
#
# Time split (the first H200 run spent its budget on engines + gate, both at their caps, and streams
# got 2 s): tests <= 70 s, engines <= 45 s (trunk and fight motion, fp16 with and without CUDA graphs,
# 3 batches; the full table is `gpu_bench engines` alone), gate <= 40 s (a few clips), and streams
# gets the rest, >= 150 s: first an ONNX Runtime CPU control at 4 streams (same workers; tells a
# harness/machine limit from an engine one), then torch-cuda fp16 at 4, 16, ... with per-call
# inference latency, frames per call and the workers' engine log (captures, fallbacks) per run.
set -uo pipefail
cd "$(dirname "$0")/.."

MODELS=build/models
DATA=.gpudata
DEVICE=cuda
QUICK=0
BUDGET=360
WHEELS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --budget) BUDGET=$2; shift 2 ;;
    --no-wheels) WHEELS=0; shift ;;
    *) echo "unknown argument $1 (--models DIR --data DIR --device cuda|cpu --quick --budget S --no-wheels)" >&2; exit 2 ;;
  esac
done

RESULTS=${OUT:-benchmarks/results}
PARTS=$(mktemp -d /tmp/vidwatch-gpu-check.XXXXXX)
LOG="$PARTS/gpu-check.log"
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 VIDWATCH_GPU_MODELS="$MODELS"

log() { echo "[gpu-check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# phase NAME CAP_SECONDS COMMAND...: run under min(CAP, what the budget has left), log, go on.
phase() {
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - 15 ))
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -lt 10 ]; then
    log "$name: skipped (budget spent)"
    echo "{\"error\": \"skipped: the ${BUDGET}s budget was spent\"}" > "$PARTS/$name.json"
    return
  fi
  log "$name: start (cap ${cap}s)"
  timeout -k 10 "$cap" "$@" > "$PARTS/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$PARTS/$name.log" >> "$LOG"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then log "$name: TIMED OUT after ${cap}s (kept what it wrote)";
  elif [ $rc -ne 0 ]; then log "$name: FAILED rc=$rc"; else log "$name: ok"; fi
}

# 0. carried wheels (the GPU machine has no network)
if [ "$WHEELS" = 1 ] && ls .whl/*.whl > /dev/null 2>&1; then
  phase install 60 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  log "install: no .whl/ (using this machine's packages)"
fi
log "models $MODELS ($(ls "$MODELS" 2>/dev/null | tr '\n' ' ')), data $DATA, device $DEVICE, budget ${BUDGET}s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG" 2>&1 || true

# 1. machine: GPU, versions, which engine `auto` picks
phase machine 40 $PY -m benchmarks.gpu_bench machine --device "$DEVICE" --out "$PARTS/machine.json"

# 2. the gpu-marked tests (parity on the real packages, CUDA graphs, providers, refusals)
phase pytest 70 $PY -m pytest -q -m gpu -p no:cacheprovider -rs tests/pipeline/engines
$PY - "$PARTS" <<'EOF' || true
import json, re, sys
from pathlib import Path
parts = Path(sys.argv[1])
text = (parts / "pytest.log").read_text(errors="replace") if (parts / "pytest.log").exists() else ""
lines = [l for l in text.splitlines() if re.search(r"\b(passed|failed|skipped|error|deselected)\b", l)]
(parts / "pytest.json").write_text(json.dumps({
    "summary": lines[-1] if lines else "no summary (timed out or did not start)",
    "skips": [l for l in text.splitlines() if l.startswith("SKIPPED")][:20],
    "failures": [l for l in text.splitlines() if l.startswith(("FAILED", "ERROR"))][:20]}))
EOF

# 3. engines: frames/s and latency per engine and batch
if [ "$QUICK" = 1 ]; then ENGINE_ARGS=(--batches 1,8 --ort-batches 1,8 --budget-s 0.2)
else ENGINE_ARGS=(--batches 1,32,128 --ort-batches 8 --budget-s 0.25 --graphs trunk,fight-motion
                  --variants torch-fp16-graphs,torch-fp16-eager); fi
phase engines 45 $PY -m benchmarks.gpu_bench engines --models "$MODELS" --device "$DEVICE" \
  --out "$PARTS/engines.json" ${ENGINE_ARGS[@]+"${ENGINE_ARGS[@]}"}

# 4. accuracy gate: FP16 vs FP32 ONNX on the carried clips (recorded into the carried packages)
if [ "$QUICK" = 1 ]; then GATE_ARGS=(--max-frames 12 --max-clips 1); else GATE_ARGS=(--max-frames 90 --max-clips 3); fi
phase gate 40 $PY -m benchmarks.gpu_bench gate --models "$MODELS" --data "$DATA" --device "$DEVICE" \
  --out "$PARTS/gate.json" --record ${GATE_ARGS[@]+"${GATE_ARGS[@]}"}

# 5. streams end to end: the most cameras kept up with (< 1% drops, p99 < 1.5 s)
left=$(( BUDGET - ($(date +%s) - START) - 30 ))
if [ "$QUICK" = 1 ]; then
  STREAM_ARGS=(--counts 1 --seconds 8 --warmup 60 --workers 1 --groups 1 --control 1)
else
  STREAM_ARGS=(--counts 4,16,48,96 --seconds 12 --warmup 45 --workers 6 --groups 4 --control 4)
fi
phase streams 300 $PY -m benchmarks.gpu_bench streams --models "$MODELS" --device "$DEVICE" \
  --out "$PARTS/streams.json" --deadline-s $(( left > 40 ? left - 10 : 30 )) ${STREAM_ARGS[@]+"${STREAM_ARGS[@]}"}

# 6. one JSON + Markdown named after the GPU
mkdir -p "$RESULTS"
$PY -m benchmarks.gpu_bench report --parts "$PARTS" --out "$RESULTS" >> "$LOG" 2>&1 || log "report: FAILED"
log "done in $(( $(date +%s) - START ))s"
cp "$LOG" "$RESULTS/gpu-check.log"
ls -l "$RESULTS" | tail -n 5
