#!/usr/bin/env python
"""Would several trained models read better together than one? Measured on validation data only.

Two ways of combining classifiers with the same classes and input are scored, on the same validation
faces and with the same objective as scripts/fit_eval_blur.py (per dataset mean recall + accuracy,
averaged over the datasets; flip averaging as the first card says; misses wrong):

- **ensembles**: the class probabilities of 2..--max-members models averaged (every combination);
  a model call per member for each face;
- **weight averages** ("model soups", Wortsman et al., ICML 2022): the weights of models fine-tuned
  from one parent averaged into one model of the same size, uniformly over all of them and greedily
  (members added in order of their own score while the objective rises). Only members with the
  first model's architecture take part.

Every member is read with the first model's eval_blur (its card's kwargs), so only the weights differ.
The test sets are never looked at.

    .venv/bin/python scripts/val_ensembles.py models/resnet18_attention_ferplus_w32 runs/w32a2/model \\
        runs/w32v3/model runs/w32turn/model runs/w32turn_b1/model runs/w48/model \\
        --data ../shared/data/ferplus.zip --data ../shared/data/ckplus48.zip \\
        --data cache/affectnet_subset_train.zip --val-folder /tmp/ferlib-val350/affectnet_val350 \\
        --val-folder /tmp/ferlib-val350/ck_val350 --report runs/ensembles/report.json
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_class_bias import logits, mean_score, scores, val_inputs  # noqa: E402
from fit_eval_blur import with_sigma  # noqa: E402

from ferlib.errors import InputError  # noqa: E402
from ferlib.fsutil import atomic_write_bytes, json_default  # noqa: E402
from ferlib.inference.checkpoint import card_spec, card_tta_flip, read_checkpoint  # noqa: E402
from ferlib.inference.runtime import load_runner, softmax  # noqa: E402
from ferlib.models import create_model  # noqa: E402


def average_weights(models: list, weights=None) -> dict:
    """The weighted mean of the floating-point tensors of same-architecture models' state dicts
    (integer buffers, e.g. BatchNorm's batch counter, are the first model's)."""
    states = [m.state_dict() for m in models]
    w = np.ones(len(states)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(float(wi) * s[key] for wi, s in zip(w, states))
        else:
            out[key] = first.clone()
    return out


def combined(members: list[list[dict]]) -> list[dict]:
    """Per validation set: the members' probabilities (plain and mirrored) averaged, as log-probabilities,
    so that scores() reads them as it reads one model's logits."""
    out = []
    for per_set in zip(*members):
        s = dict(per_set[0])
        for key in ("plain", "flipped"):
            s[key] = np.log(np.mean([softmax(m[key]) for m in per_set], axis=0) + 1e-12)
        out.append(s)
    return out


def summary(sets: list[dict], n: int) -> dict:
    per = scores(sets, np.zeros(n, np.float32), n)
    return {"objective": mean_score(per), "sets": per}


def line(name: str, row: dict) -> str:
    cells = " | ".join(f"{k} {v['accuracy']:.3f} / {v['mean_recall']:.3f}" for k, v in row["sets"].items())
    return f"{name:40s} {row['objective']:.4f} | {cells}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="checkpoints or shipped names; the first sets classes, input and blur")
    ap.add_argument("--data", action="append", default=[], help="a training dataset (its val split is read)")
    ap.add_argument("--val-folder", action="append", default=[], help="a dataset read whole as validation")
    ap.add_argument("--max-members", type=int, default=3, help="largest ensemble tried (default 3)")
    ap.add_argument("--report", help="JSON report")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give two models or more")
    if not args.data and not args.val_folder:
        ap.error("give --data or --val-folder")
    torch.set_num_threads(1)
    loaded = [read_checkpoint(m) for m in args.models]
    _, first, card0 = loaded[0]
    classes, spec = list(card0["classes"]), card_spec(card0)
    sigma = float(card0["model"]["kwargs"].get("eval_blur", 0.0))
    for ref, (_, _, card) in zip(args.models, loaded):
        if list(card["classes"]) != classes or card_spec(card) != spec:
            raise InputError(f"{ref}: its classes or input differ from {args.models[0]}'s")
    inputs = [val_inputs(d, classes, spec) for d in args.data]
    inputs += [val_inputs(d, classes, spec, all_rows=True) for d in args.val_folder]
    flip = card_tta_flip(card0)

    def read(runner) -> list[dict]:
        return [logits(runner, i, spec, flip=flip) for i in inputs]

    n, models, outputs, rows = len(classes), [], {}, {}
    for ref, (_, model, card) in zip(args.models, loaded):
        model, card = with_sigma(model, card, sigma)
        models.append((ref, model, card))
        outputs[ref] = read(load_runner((model, card), backend="onnx"))
        rows[ref] = summary(outputs[ref], n)
        print(line(ref, rows[ref]), flush=True)
    for k in range(2, min(args.max_members, len(args.models)) + 1):
        for combo in itertools.combinations(args.models, k):
            name = " + ".join(combo)
            rows[name] = summary(combined([outputs[m] for m in combo]), n)
            print(line(name, rows[name]), flush=True)

    def soup_score(refs: list[str]) -> dict:
        chosen = [m for r, m, _ in models if r in refs]
        soup = create_model(card0["model"]["name"], **models[0][2]["model"]["kwargs"])
        soup.load_state_dict(average_weights(chosen))
        return summary(read(load_runner((soup.eval(), models[0][2]), backend="onnx")), n)

    same = [r for r, m, c in models if c["model"] == models[0][2]["model"]]
    soups = {}
    if len(same) > 1:
        soups["uniform: " + " + ".join(same)] = soup_score(same)
        order = sorted(same, key=lambda r: -rows[r]["objective"])
        greedy, best = [order[0]], rows[order[0]]
        for r in order[1:]:
            trial = soup_score(greedy + [r])
            if trial["objective"] > best["objective"]:
                greedy, best = greedy + [r], trial
        soups["greedy: " + " + ".join(greedy)] = best
        for name, row in soups.items():
            print(line("soup " + name, row), flush=True)
    best_name = max(rows, key=lambda r: rows[r]["objective"])
    print(f"best ensemble or member: {best_name} ({rows[best_name]['objective']:.4f}); "
          f"{args.models[0]} alone {rows[args.models[0]]['objective']:.4f}")
    if args.report:
        report = {"date": datetime.date.today().isoformat(), "models": args.models, "eval_blur": sigma,
                  "data": [Path(d).name for d in args.data], "val_folders": [Path(d).name for d in args.val_folder],
                  "objective": "mean over datasets of (mean recall + accuracy), flip averaging as the first card says, misses wrong",
                  "members_and_ensembles": rows, "weight_averages": soups,
                  "command": "python scripts/val_ensembles.py " + " ".join(sys.argv[1:])}
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.report), json.dumps(report, indent=2, default=json_default).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
