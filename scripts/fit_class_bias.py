#!/usr/bin/env python
"""Fit a per-class logit adjustment (the card's `output_bias`) on validation data, for the classes a
model under-reads.

A classifier trained on data where some emotions are rare (FER+: 116 disgust and 536 fear against
8,733 neutral in train) leans to the common ones; adding a constant per class to its logits moves
that balance without retraining (logit adjustment, Menon et al., ICLR 2021). The constants are chosen
here on the **validation** parts of the training data only (the same splits `ferlib train` and
`finetune` make: FER+ Valid, CK+ validation subjects, a seeded 10 % of the AffectNet subset), by
coordinate ascent on   mean recall over the classes present + `--acc-weight` x accuracy   (each
dataset weighted equally), with flip averaging as the Pipeline runs the model, under the constraint
that no class with at least `--min-support` validation faces in a dataset loses more than
`--max-drop` of its recall there (so no class is traded for another). Missed faces stay
wrong. The test sets are never looked at: measure them afterwards through `ferlib predict`
(scripts/eval_all_sets.sh).

    .venv/bin/python scripts/fit_class_bias.py models/resnet18_attention_ferplus \\
        --data ../shared/data/ferplus.zip --data ../shared/data/ckplus48.zip \\
        --data cache/affectnet_subset_train.zip --out runs/bias/model --report runs/bias/report.json

writes runs/bias/model.{json,safetensors}: the same weights, the card with `output_bias` and a note.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ferlib.data.tensors import import_dataset, prepare  # noqa: E402
from ferlib.fsutil import atomic_write_bytes, emit_report, json_default  # noqa: E402
from ferlib.inference.checkpoint import checkpoint_paths, resolve_checkpoint  # noqa: E402
from ferlib.inference.runtime import load_runner, softmax  # noqa: E402
from ferlib.inputs import Mirror  # noqa: E402

GRID = np.round(np.arange(-2.0, 2.0001, 0.05), 2)


def val_inputs(path: str, classes: list[str], spec, all_rows: bool = False) -> dict:
    """The validation faces of one dataset (all_rows: every row of it, a folder made for validation),
    prepared once: model inputs of the detected faces, labels of every row."""
    ds = import_dataset(path)
    if not all_rows:
        ds = ds.with_table(ds.table[ds.table["split"] == "val"].reset_index(drop=True))
    prep = prepare(ds, spec, classes, drop_unknown=True, workers=1, progress=False)
    inputs = prep.eval_inputs()
    return {"name": Path(path).stem, "labels": np.asarray(inputs["labels"]), "data": inputs["data"],
            "detected": np.asarray(inputs["detected_mask"], bool)}


def logits(runner, inputs: dict, spec, flip: bool = True) -> dict:
    """`inputs` (val_inputs) with the runner's plain and mirrored logits of its detected faces; flip False
    (a card without flip averaging): the plain logits stand for the mirrored ones too."""
    mirror, plain, flipped = Mirror(spec), [], []
    data = inputs["data"]
    for i in range(0, len(data), 256):
        batch = data.batch(slice(i, i + 256))
        plain.append(runner.outputs(batch))
        if flip:
            flipped.append(runner.outputs(mirror(batch)))
    return {**inputs, "plain": np.concatenate(plain), "flipped": np.concatenate(flipped if flip else plain)}


def val_logits(runner, path: str, classes: list[str], spec) -> dict:
    """Plain and mirrored logits of the detected validation faces of one dataset, labels of every row."""
    return logits(runner, val_inputs(path, classes, spec), spec)


def predictions(sets: list[dict], bias: np.ndarray) -> list[np.ndarray]:
    """Per set: the predicted class of every row (-1 for a missed face), as the Pipeline decides."""
    out = []
    for s in sets:
        pred = np.full(len(s["labels"]), -1)
        probs = (softmax(s["plain"] + bias) + softmax(s["flipped"] + bias)) / 2
        pred[s["detected"]] = probs.argmax(1)
        out.append(pred)
    return out


def scores(sets: list[dict], bias: np.ndarray, n_classes: int) -> dict:
    per = {}
    for s, pred in zip(sets, predictions(sets, bias)):
        y = s["labels"]
        recalls = {c: float((pred[y == c] == c).mean()) for c in range(n_classes) if (y == c).any()}
        per[s["name"]] = {"accuracy": float((pred == y).mean()), "mean_recall": float(np.mean(list(recalls.values()))),
                          "recall": recalls, "n": int(len(y))}
    return per


def objective(sets: list[dict], bias: np.ndarray, n_classes: int, acc_weight: float, floor: dict | None = None,
              min_support: int = 20, max_drop: float = 0.02) -> float:
    """The mean over datasets of mean recall + acc_weight x accuracy; -inf where a class with
    min_support faces falls more than max_drop below its recall in `floor` (the unadjusted scores)."""
    per = scores(sets, bias, n_classes)
    if floor is not None:
        for s in sets:
            for c, r in per[s["name"]]["recall"].items():
                if (s["labels"] == c).sum() >= min_support and r < floor[s["name"]]["recall"][c] - max_drop:
                    return float("-inf")
    return mean_score(per, acc_weight)


def mean_score(per: dict, acc_weight: float = 1.0) -> float:
    """The mean over the datasets of `scores` of mean recall + acc_weight x accuracy."""
    return float(np.mean([v["mean_recall"] + acc_weight * v["accuracy"] for v in per.values()]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="checkpoint path or shipped name")
    ap.add_argument("--data", action="append", required=True, help="a training dataset (its val split is used)")
    ap.add_argument("--acc-weight", type=float, default=1.0, help="weight of accuracy beside mean recall")
    ap.add_argument("--sweeps", type=int, default=4, help="coordinate-ascent passes over the classes")
    ap.add_argument("--min-support", type=int, default=20, help="classes with this many faces in a set are guarded")
    ap.add_argument("--max-drop", type=float, default=0.02, help="largest recall loss allowed to a guarded class")
    ap.add_argument("--out", help="checkpoint stem to write: the same weights, the card with output_bias")
    ap.add_argument("--report", help="JSON report")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runner = load_runner(args.model, backend="onnx")
    card = dict(runner.card)
    card.pop("output_bias", None)
    classes, spec = list(card["classes"]), runner.spec
    sets = [val_logits(runner, d, classes, spec) for d in args.data]
    n = len(classes)
    bias = np.zeros(n, np.float32)
    floor = scores(sets, bias, n)
    guard = dict(floor=floor, min_support=args.min_support, max_drop=args.max_drop)
    start = objective(sets, bias, n, args.acc_weight, **guard)
    best = start
    for _ in range(args.sweeps):
        moved = False
        for c in range(n):
            if classes[c] == "neutral":  # the reference: only differences between classes matter
                continue
            for v in GRID:
                trial = bias.copy()
                trial[c] = v
                f = objective(sets, trial, n, args.acc_weight, **guard)
                if f > best + 1e-9:
                    best, bias, moved = f, trial, True
        if not moved:
            break
    report = {"model": str(args.model), "classes": classes, "output_bias": [round(float(b), 2) for b in bias],
              "objective": {"before": start, "after": best, "acc_weight": args.acc_weight,
                            "min_support": args.min_support, "max_drop": args.max_drop},
              "val_before": scores(sets, np.zeros(n, np.float32), n), "val_after": scores(sets, bias, n)}
    if args.out:
        src = resolve_checkpoint(args.model)
        wsrc, _ = checkpoint_paths(src)
        wdst, cdst = checkpoint_paths(args.out)
        wdst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wsrc, wdst)
        card["output_bias"] = report["output_bias"]
        card["output_bias_note"] = (f"per-class logit adjustment fitted on the validation parts of {', '.join(Path(d).name for d in args.data)} "
                                    f"(scripts/fit_class_bias.py, acc weight {args.acc_weight}, no guarded class "
                                    f"losing more than {args.max_drop} recall); test sets not used")
        atomic_write_bytes(cdst, json.dumps(card, indent=1, default=json_default).encode())
    emit_report(json.dumps(report, indent=1, default=json_default), args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
