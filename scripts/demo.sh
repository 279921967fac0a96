#!/usr/bin/env bash
# The main job: train CRAD, then evaluate it. Real data when EDGEAD_DATA (an MVTec-style root) is set,
# otherwise a small synthetic texture set generated on the fly (so it runs offline anywhere).
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
  .venv/bin/python -c "from edgead.data.synth import make_dataset; make_dataset('$DATA')"
  echo "demo: no EDGEAD_DATA given; synthetic textures in $DATA (not an accuracy benchmark), $EPOCHS epochs"
fi
"$EDGEAD" train --model "$MODEL" --data "$DATA" "${CATS[@]}" --epochs "$EPOCHS" --out "$WORK/$MODEL" \
  --json "$WORK/$MODEL.train.json"
"$EDGEAD" eval "$WORK/$MODEL" --data "$DATA" --json "$WORK/$MODEL.eval.json"
echo "demo: metrics in $WORK/$MODEL.eval.json, overlays in $WORK/$MODEL/eval/overlays/"
