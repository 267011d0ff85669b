#!/usr/bin/env bash
# Assemble .gpudata/, the small real-data subset the GPU check's accuracy gate reads (<= 15 MiB):
# UCSD Ped2 Test001 + Test002 (both have normal and anomalous frames) with labels.csv, and the
# 10 smallest clips of each fight class. From ../shared/data (which does not travel to the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data}
OUT=.gpudata
PER_CLASS=${PER_CLASS:-10}
rm -rf "$OUT"
mkdir -p "$OUT/ucsd_ped2/test" "$OUT/fight/fight" "$OUT/fight/nofight"
for clip in Test001 Test002; do
  cp -r "$SRC/ucsd_ped2/test/$clip" "$OUT/ucsd_ped2/test/"
done
{ head -1 "$SRC/ucsd_ped2/test/labels.csv"; grep -E '^(Test001|Test002),' "$SRC/ucsd_ped2/test/labels.csv"; } > "$OUT/ucsd_ped2/test/labels.csv"
for cls in fight nofight; do
  ls -S "$SRC/fight/train/$cls"/*.mp4 | tail -n "$PER_CLASS" | while read -r f; do cp "$f" "$OUT/fight/$cls/"; done
done
du -sh "$OUT"
