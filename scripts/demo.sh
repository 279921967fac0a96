#!/usr/bin/env bash
# The main job: train a model (CRAD by default; MODEL=crr or ccad), evaluate it, export a bundle, make its INT8
# graph, verify FP32 and INT8 against PyTorch, bench, and inspect a "conveyor" video through the live GStreamer
# pipeline. Real data when EDGEAD_DATA (an MVTec-style root) is set, otherwise a small synthetic texture set
# generated on the fly (so it runs offline anywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
EDGEAD=.venv/bin/edgead
MODEL=${MODEL:-crad}
WORK=${WORK:-runs/demo}
mkdir -p "$WORK"
if [ -n "${EDGEAD_DATA:-}" ]; then
  DATA=$EDGEAD_DATA
  EPOCHS=${EPOCHS:-50}
  CATS=()
  for c in ${CATEGORIES:-}; do CATS+=(--category "$c"); done
  echo "demo: real data at $DATA (${CATEGORIES:-all categories}), $EPOCHS epochs"
else
  DATA=$WORK/synthetic-data
  EPOCHS=${EPOCHS:-4}
  CATS=()
  # 200 normals per texture: the run holds out 20 of them, enough for a threshold that means something
  .venv/bin/python -c "from edgead.data.synth import make_dataset; make_dataset('$DATA', n_train=200)"
  echo "demo: no EDGEAD_DATA given; synthetic textures in $DATA (not an accuracy benchmark), $EPOCHS epochs"
fi
# INT8 calibration images: the project's default (64). On the textures' build split (no test image) 16 gave score
# error 3.10 and 64 gave 1.01 (CRAD, PTQ; the 64-image build took 7.5 min on 2 cores).
CALIB=${CALIB_COUNT:-64}
"$EDGEAD" train --model "$MODEL" --data "$DATA" "${CATS[@]}" --epochs "$EPOCHS" --out "$WORK/$MODEL" \
  --json "$WORK/$MODEL.train.json"
"$EDGEAD" eval "$WORK/$MODEL" --data "$DATA" --json "$WORK/$MODEL.eval.json"
# Deployment path: bundle (FP32 graph, parity-checked), INT8 graph (CPU recipe), the same metrics on ONNX Runtime.
"$EDGEAD" export "$WORK/$MODEL" --out "$WORK/$MODEL-bundle" --data "$DATA"
gate() {  # a failed gate (exit 1) is reported and the demo goes on; bad input (2) or a bug (3) stops it
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -gt 1 ]; then exit "$rc"; fi
  return "$rc"
}
gate "$EDGEAD" build "$WORK/$MODEL-bundle" --precision int8 --calib-count "$CALIB" --data "$DATA" \
  --json "$WORK/$MODEL.build-int8.json" \
  || echo "demo: the INT8 graph fails the default gates on its build split; it is kept for the checks below"
"$EDGEAD" eval "$WORK/$MODEL-bundle" --precision int8-cpu --data "$DATA" --json "$WORK/$MODEL.eval-int8.json"
"$EDGEAD" bench "$WORK/$MODEL-bundle" --precision fp32 --precision int8-cpu --json "$WORK/$MODEL.bench-int8.json"
# Parity against the PyTorch reference (layered gates); a failing gate is reported, not hidden.
"$EDGEAD" verify "$WORK/$MODEL-bundle" --precision fp32 --data "$DATA" --html "$WORK/$MODEL.verify-fp32.html"
gate "$EDGEAD" verify "$WORK/$MODEL-bundle" --precision int8 --data "$DATA" --html "$WORK/$MODEL.verify-int8.html" \
  || echo "demo: INT8 did not pass every default gate; the report says which, where and the likely culprit layers"
# Live: a conveyor video of test images (good and defective alternating) through the GStreamer pipeline
FIRST=$(.venv/bin/python -c "import json; print(json.load(open('$WORK/$MODEL-bundle/meta.json'))['categories'][0])")
.venv/bin/python scripts/make_conveyor.py --data "$DATA" --category "$FIRST" --bundle "$WORK/$MODEL-bundle" \
  --per-class 8 --out "$WORK/conveyor.mkv"
rm -rf "$WORK/alerts"
"$EDGEAD" inspect "$WORK/$MODEL-bundle" --source "file://$WORK/conveyor.mkv" --precision int8 --category "$FIRST" \
  --alerts "$WORK/alerts" --output "file://$WORK/inspected.mp4" --json "$WORK/$MODEL.inspect.json"
gate "$EDGEAD" verify "$WORK/$MODEL-bundle" --precision int8 --live "file://$WORK/conveyor.mkv" --category "$FIRST" \
  --data "$DATA" --json "$WORK/$MODEL.verify-live.json" \
  || echo "demo: see $WORK/$MODEL.verify-live.json for the live check (the INT8 gates above may fail on their own)"
echo "demo: metrics in $WORK/$MODEL.eval.json (torch) and $WORK/$MODEL.eval-int8.json (ONNX Runtime INT8),"
echo "      overlays in $WORK/$MODEL/eval/overlays/, bundle in $WORK/$MODEL-bundle/,"
echo "      parity reports $WORK/$MODEL.verify-fp32.html and $WORK/$MODEL.verify-int8.html,"
echo "      live: $WORK/inspected.mp4 (overlays), $WORK/alerts/events.jsonl, $WORK/$MODEL.inspect.json"
