#!/usr/bin/env bash
# One acceptance run for a user with a Jetson: build the FP16 and INT8 engines of BUNDLE, verify them against
# the PyTorch reference outputs shipped in the bundle, benchmark them, and pack one report to send back.
# Usage: scripts/jetson_acceptance.sh BUNDLE [OUT_DIR]
# EDGEAD_BACKEND=tensorrt|onnxruntime (default: tensorrt when TensorRT and a GPU are present, else onnxruntime;
# CI runs every step here on ONNX Runtime so the script cannot rot).
set -uo pipefail
BUNDLE=${1:?usage: $0 BUNDLE [OUT_DIR]}
HERE="$(cd "$(dirname "$0")/.." && pwd)"
EDGEAD=${EDGEAD:-$HERE/.venv/bin/edgead}
[ -x "$EDGEAD" ] || EDGEAD=edgead
PY="$(dirname "$(command -v "$EDGEAD")")/python"
[ -x "$PY" ] || PY=python3
STAMP="$(hostname)-$(date +%Y%m%d-%H%M%S)"
OUT=${2:-acceptance-$STAMP}
mkdir -p "$OUT"
if [ ! -f "$BUNDLE/meta.json" ]; then
  echo "error: $BUNDLE is not a bundle (no meta.json); pass the folder written by edgead export" >&2; exit 2
fi
if [ ! -f "$BUNDLE/reference.npz" ]; then
  echo "error: $BUNDLE has no reference outputs; on the workstation run: edgead verify $BUNDLE --precision fp32" >&2
  exit 2
fi
if [ ! -f "$BUNDLE/model.int8-tensorrt.onnx" ]; then
  # INT8 is decided on the workstation (Q/DQ from calibration on real images); the device only compiles it.
  echo "error: $BUNDLE has no INT8 Q/DQ graph; on the workstation run: edgead build $BUNDLE --precision int8 --recipe tensorrt" >&2
  exit 2
fi
BACKEND=${EDGEAD_BACKEND:-}
if [ -z "$BACKEND" ]; then
  if "$HERE/.venv/bin/python" -c "import tensorrt" 2>/dev/null && { [ -f /etc/nv_tegra_release ] || command -v nvidia-smi >/dev/null; }; then
    BACKEND=tensorrt
  else
    BACKEND=onnxruntime
  fi
fi
echo "acceptance: backend $BACKEND, report in $OUT"
status=0
step() {  # step NAME CMD...: run, keep its output, remember a failure, go on
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  if "$@" >>"$OUT/log.txt" 2>&1; then echo "   ok" | tee -a "$OUT/log.txt"
  else echo "   FAILED (exit $?)" | tee -a "$OUT/log.txt"; status=1; fi
}
# doctor exits 1 when something is missing (e.g. no camera here); that is information, not a failed acceptance
echo "== doctor" | tee -a "$OUT/log.txt"
"$EDGEAD" doctor --json "$OUT/doctor.json" >>"$OUT/log.txt" 2>&1 || true
step verify-fp32 "$EDGEAD" verify "$BUNDLE" --precision fp32 --backend "$BACKEND" --json "$OUT/verify-fp32.json" \
  --html "$OUT/verify-fp32.html"
# The INT8 graph is the TensorRT recipe's (signed, symmetric Q/DQ): on ONNX Runtime this checks the very graph
# the device compiles.
step build-fp16 "$EDGEAD" build "$BUNDLE" --precision fp16 --backend "$BACKEND" --json "$OUT/build-fp16.json"
step verify-fp16 "$EDGEAD" verify "$BUNDLE" --precision fp16 --backend "$BACKEND" --json "$OUT/verify-fp16.json" \
  --html "$OUT/verify-fp16.html"
step build-int8 "$EDGEAD" build "$BUNDLE" --precision int8 --recipe tensorrt --backend "$BACKEND" \
  --json "$OUT/build-int8.json"
step verify-int8 "$EDGEAD" verify "$BUNDLE" --precision int8-tensorrt --backend "$BACKEND" \
  --json "$OUT/verify-int8.json" --html "$OUT/verify-int8.html"
# The camera path at a camera's size: the reference parts framed at 1920x1080 through the real pipeline. With
# the bundle's own resize it must pass; the pipeline's scaler (the VIC here on a Jetson) is measured, not gated.
step camera-bundle "$EDGEAD" verify "$BUNDLE" --precision fp16 --backend "$BACKEND" --source-size 1920x1080 \
  --scale bundle --json "$OUT/camera-bundle.json"
echo "== camera-pipeline (measured)" | tee -a "$OUT/log.txt"
"$EDGEAD" verify "$BUNDLE" --precision fp16 --backend "$BACKEND" --source-size 1920x1080 --scale pipeline \
  --json "$OUT/camera-pipeline.json" >>"$OUT/log.txt" 2>&1 || true
step bench "$EDGEAD" bench "$BUNDLE" --backend "$BACKEND" --precision fp32 --precision fp16 --precision int8-tensorrt \
  --json "$OUT/bench.json"
cp "$BUNDLE/meta.json" "$OUT/bundle-meta.json"
"$PY" -m edgead.acceptance "$OUT" "$BACKEND" "$status" || true
tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
echo "acceptance: $([ $status = 0 ] && echo PASSED || echo 'NOT PASSED (see log.txt)'); send back $OUT.tar.gz"
exit $status
