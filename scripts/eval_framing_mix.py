"""The default on held-out class folders (scripts/make_eval_sets.py) with its faces framed three ways, read
as `ferlib evaluate` reads them (flip averaging; turned faces frontalised for the turned-face expert):
on the detector box (what `predict` does), on the face mesh's box, and the mean of the two:

    .venv/bin/python scripts/eval_framing_mix.py /tmp/ferlib-eval/affectnet_tight350 [more folders]

Faces nobody finds count as wrong; the turned faces keep the expert's reading in every row.
"""
from __future__ import annotations

import argparse

import numpy as np

from ferlib.data.importers import import_image_folder
from ferlib.data.tensors import prepare
from ferlib.inference.checkpoint import card_spec, card_tta_flip
from ferlib.inference.pipeline import default_model_path, turned_expert_of
from ferlib.inference.runtime import load_runner
from ferlib.training.evaluate import predict_outputs, read_prepared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args()
    model = load_runner(default_model_path())
    expert_path = turned_expert_of(model.card)
    expert = None if expert_path is None else load_runner(expert_path)
    spec, classes, tta = card_spec(model.card), list(model.card["classes"]), card_tta_flip(model.card)
    for folder in args.folders:
        ds = import_image_folder(folder, on_unknown="skip")
        box = prepare(ds, spec, classes, framing="frontal" if expert else "box", drop_unknown=True, workers=1)
        mesh = prepare(ds, spec, classes, framing="landmarks", drop_unknown=True, workers=1)
        probs, theirs = read_prepared(model, box, tta_flip=tta, expert=expert)
        p_box = np.zeros((len(box), len(classes)))
        p_box[box.evaluated] = probs
        to_expert = np.zeros(len(box), bool)
        to_expert[box.evaluated] = theirs
        p_mesh = np.zeros_like(p_box)
        p_mesh[mesh.detected] = predict_outputs(model, mesh.tensor_set(), tta_flip=tta).numpy()
        p_mesh = np.where(to_expert[:, None], p_box, p_mesh)
        y = box.labels
        for name, p in (("detector box", p_box), ("face-mesh box", p_mesh), ("mean", (p_box + p_mesh) / 2)):
            pred = np.where(box.evaluated, p.argmax(1), -1)
            recall = ", ".join(f"{c} {np.mean(pred[y == i] == i):.2f}" for i, c in enumerate(classes) if (y == i).any())
            print(f"{folder} | {name}: accuracy {np.mean(pred == y):.4f} ({len(y)} images) | {recall}")


if __name__ == "__main__":
    main()
