#!/usr/bin/env bash
# resnet18_attention_ferplus, the default since 2026-12-06 (issue 22): the eight-class ResNet18-attention
# (width 16) fine-tuned from resnet18_attention_fer2013_long on FER+ vote distributions, CK+ by subject and
# the AffectNet subset without its held-out test crops; class weights inverse frequency ** 0.5; the best
# epoch by validation mean recall. Two stages, run on 2026-12-06 on 2 shared CPU cores, one thread each:
#   stage 1: 8 epochs, lr 3e-4 (2,621 s);  stage 2: 5 more with head-turn augmentation (+-30 deg), lr 1.5e-4 (1,326 s).
# Data: FER+ FER2013Train/Valid/Test (soft targets; images without a majority label left out), CK+
# train/val/test subjects (subject_split seed 0), AffectNet subset minus the first 60 images per class
# (scripts/make_affectnet_train_zip.py; its val = a seeded 10 % per class). Validation = the three val
# parts together; test = FER+ Test + CK+ test subjects.
# Run from the repository root; the stage-1 checkpoint goes to runs/ (not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
D=../shared/data
$PY scripts/make_affectnet_train_zip.py $D/affectnet_subset.zip cache/affectnet_subset_train.zip
DATA=(--data $D/ferplus.zip --data $D/ckplus48.zip --data cache/affectnet_subset_train.zip)
COMMON=(--adapt train --classes all --optimizer adamw --weight-decay 0.01 --schedule cosine --class-weight-power 0.5
        --tta --patience 4 --monitor val_recall --threads 1 --workers 1)
$PY -m ferlib finetune resnet18_attention_fer2013_long "${DATA[@]}" "${COMMON[@]}" --epochs 8 --lr 3e-4 \
    --out runs/fp8_A/model --run-dir runs/fp8_A
$PY -m ferlib finetune runs/fp8_A/model.json "${DATA[@]}" "${COMMON[@]}" --epochs 5 --lr 1.5e-4 --pose-augment 30 \
    --out models/resnet18_attention_ferplus --run-dir runs/fp8_C
# every held-out set through `ferlib predict` (scripts/make_eval_sets.py --out /tmp/ferlib-eval first)
scripts/eval_all_sets.sh models/resnet18_attention_ferplus ferplus
