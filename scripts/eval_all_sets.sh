#!/usr/bin/env bash
# Every held-out set at once, through `ferlib predict` (scripts/eval_predict.py), for one model:
#   scripts/eval_all_sets.sh MODEL TAG [SETS_DIR] [OUT_DIR]
# SETS_DIR (default /tmp/ferlib-eval) is what scripts/make_eval_sets.py builds; writes OUT_DIR/TAG_<set>.json
# (default runs/eval), then `scripts/eval_report.py OUT_DIR TAG [TAG ...]` prints the tables.
# FER+ Test scores the images of classes the model lacks as wrong (a seven-class model's contempt faces).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; TAG=$2; SETS=${3:-/tmp/ferlib-eval}; OUT=${4:-runs/eval}
mkdir -p "$OUT"
for s in ferplus_test fer2013_private affectnet_tight350 ckplus_test350 turns; do
    [ -d "$SETS/$s" ] || { echo "no $SETS/$s: run scripts/make_eval_sets.py --out $SETS" >&2; exit 2; }
    extra=(); [ "$s" = ferplus_test ] && extra=(--keep-other-classes)
    .venv/bin/python scripts/eval_predict.py "$SETS/$s" --model "$MODEL" "${extra[@]}" \
        --csv "/tmp/eval-$TAG-$s.csv" --out "$OUT/${TAG}_$s.json" > /dev/null
    echo "$TAG $s: $OUT/${TAG}_$s.json"
done
