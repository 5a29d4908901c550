#!/usr/bin/env bash
# The width-32 ResNet18-attention on the default's data (issue 22, capacity): the shipped width-16 default
# widened to width 32 without changing what it computes (scripts/widen_model.py, Net2WiderNet), then
# fine-tuned on the same data, targets, class balance and selection as the default
# (scripts/train_ferplus.sh): FER+ vote distributions, CK+ by subject, the AffectNet subset without its
# held-out crops; class weights inverse frequency ** 0.5; head-turn augmentation +-30 deg; the best epoch
# by validation mean recall. A run stopped early goes on with the same command (it passes --resume when
# the run folder holds a resume point).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
D=../shared/data
RUN=${RUN:-runs/w32}
[ -f cache/affectnet_subset_train.zip ] || $PY scripts/make_affectnet_train_zip.py $D/affectnet_subset.zip cache/affectnet_subset_train.zip
[ -f $RUN/start.json ] || $PY scripts/widen_model.py models/resnet18_attention_ferplus --factor 2 --out $RUN/start
RESUME=(); [ -f $RUN/resume.pt ] && RESUME=(--resume)
$PY -m ferlib finetune $RUN/start.json --adapt train --classes all \
    --data $D/ferplus.zip --data $D/ckplus48.zip --data cache/affectnet_subset_train.zip \
    --epochs ${EPOCHS:-10} --lr 3e-4 --optimizer adamw --weight-decay 0.01 --schedule cosine --class-weight-power 0.5 \
    --pose-augment 30 --tta --patience 4 --monitor val_recall --threads ${THREADS:-2} --workers 1 \
    --out $RUN/model --run-dir $RUN "${RESUME[@]}"
