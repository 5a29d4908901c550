#!/usr/bin/env python
"""Choose an image model's `eval_blur` (the sigma of `ferlib.models.blocks.EvalBlur`) on
validation data.

Models trained with ferlib's augmentation saw every crop resampled, hence smoothed; read crisp, they
score lower. For each sigma in --grid this reads the **validation** faces of each --data dataset (the
splits `ferlib train`/`finetune` make) and every face of each --val-folder (a folder made for
validation, e.g. scripts/make_turned_train.py --split val), through the runner `ferlib predict` uses
(ONNX, flip averaging as the card says). It scores  mean recall + accuracy  per dataset, averaged over
datasets, the same objective as scripts/fit_class_bias.py without a bias. It prints one row per sigma,
with each dataset's accuracy, mean recall and lowest class recall, and takes the best. The test sets
are never looked at: measure them afterwards through `ferlib predict` (scripts/eval_all_sets.sh).

    .venv/bin/python scripts/make_val_sets350.py --out /tmp/ferlib-val350     # once
    .venv/bin/python scripts/fit_eval_blur.py models/resnet18_attention_ferplus_w32 \\
        --data ../shared/data/ferplus.zip --data ../shared/data/ckplus48.zip \\
        --data cache/affectnet_subset_train.zip --val-folder /tmp/ferlib-val350/affectnet_val350 \\
        --val-folder /tmp/ferlib-val350/ck_val350 --report runs/blur/w32.json [--write]

The 350 px folders matter: a small face enlarged and cut again (the 350 px sets) is already soft, and
reads worse blurred; native 48 px crops read better. Validating on both kinds keeps that trade in view.

--write sets the chosen sigma in the card's model kwargs, in place; the weights are untouched. The
card's `training.eval_blur` records the grid, the data and the scores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_class_bias import logits, mean_score, scores, val_inputs  # noqa: E402

from ferlib.fsutil import atomic_write_bytes, json_default  # noqa: E402
from ferlib.inference.checkpoint import card_spec, card_tta_flip, checkpoint_paths, read_checkpoint  # noqa: E402
from ferlib.inference.runtime import load_runner  # noqa: E402
from ferlib.models import create_model  # noqa: E402

GRID = (0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)


def with_sigma(model, card: dict, sigma: float):
    """The same weights in a model whose eval_blur is `sigma`, and its card."""
    kwargs = {k: v for k, v in card["model"]["kwargs"].items() if k != "eval_blur"}
    if sigma:
        kwargs["eval_blur"] = float(sigma)
    twin = create_model(card["model"]["name"], **kwargs)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    return twin, {**card, "model": {"name": card["model"]["name"], "kwargs": kwargs}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="checkpoint path or shipped name")
    ap.add_argument("--data", action="append", default=[], help="a training dataset (its val split is read)")
    ap.add_argument("--val-folder", action="append", default=[], help="a dataset read whole as validation")
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="sigmas to try (px)")
    ap.add_argument("--write", action="store_true", help="set the chosen sigma in the model's card, in place")
    ap.add_argument("--report", help="JSON report")
    args = ap.parse_args()
    if not args.data and not args.val_folder:
        ap.error("give --data or --val-folder")
    torch.set_num_threads(1)
    path, model, card = read_checkpoint(args.model)
    if "image" not in model.input_keys or model.task != "classification":
        ap.error(f"{args.model} reads {list(model.input_keys)}: eval blur is for image models")
    classes, n = list(card["classes"]), len(card["classes"])
    spec = card_spec(card)
    inputs = [val_inputs(d, classes, spec) for d in args.data]
    inputs += [val_inputs(d, classes, spec, all_rows=True) for d in args.val_folder]
    rows = []
    for sigma in args.grid:
        twin, twin_card = with_sigma(model, card, sigma)
        runner = load_runner((twin, twin_card), backend="onnx")
        sets = [logits(runner, i, spec, flip=card_tta_flip(card)) for i in inputs]
        per = scores(sets, np.zeros(n, np.float32), n)
        objective = mean_score(per)
        rows.append({"sigma": sigma, "objective": objective, "sets": per})
        cells = " | ".join(f"{k} {v['accuracy']:.4f} / {v['mean_recall']:.4f} / min "
                           f"{min(v['recall'].values()):.2f} ({classes[min(v['recall'], key=v['recall'].get)]})"
                           for k, v in per.items())
        print(f"sigma {sigma:.2f}: objective {objective:.4f} | {cells}", flush=True)
    best = max(rows, key=lambda r: r["objective"])
    print(f"chosen: sigma {best['sigma']} (objective {best['objective']:.4f}; sigma 0: "
          f"{next((r['objective'] for r in rows if r['sigma'] == 0), float('nan')):.4f})")
    report = {"model": str(args.model), "date": datetime.date.today().isoformat(), "chosen": best["sigma"],
              "data": [Path(d).name for d in args.data], "val_folders": [Path(d).name for d in args.val_folder],
              "objective": "mean over datasets of (mean recall + accuracy), flip averaging as the card says",
              "grid": rows}
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.report), json.dumps(report, indent=2, default=json_default).encode())
    if args.write:
        _, new_card = with_sigma(model, card, best["sigma"])
        new_card["training"] = {**new_card.get("training", {}), "eval_blur": {
            k: report[k] for k in ("date", "chosen", "data", "val_folders", "objective")}
            | {"objective_by_sigma": {str(r["sigma"]): round(r["objective"], 4) for r in rows},
               "command": "python scripts/fit_eval_blur.py " + " ".join(sys.argv[1:])}}
        new_card["metrics"] = {**new_card.get("metrics", {}), "eval_blur_note": (
            f"the figures above were measured with eval_blur {card['model']['kwargs'].get('eval_blur', 0)}; "
            f"{best['sigma']} was set on {report['date']} (training.eval_blur); measure the held-out sets "
            "again through ferlib predict (scripts/eval_all_sets.sh)")}
        _, cpath = checkpoint_paths(path)
        atomic_write_bytes(cpath, json.dumps(new_card, indent=2, default=json_default).encode())
        read_checkpoint(cpath)
        print(f"wrote {cpath}: model kwargs eval_blur = {best['sigma']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
