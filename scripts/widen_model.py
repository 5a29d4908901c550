#!/usr/bin/env python
"""Write a wider copy of a trained `resnet18_attention` checkpoint that computes the same function,
as the start of a longer fine-tune with more capacity (Net2WiderNet; `ferlib.models.resnet.widen`).

Training a wide network from scratch on these CPUs costs hours an epoch; widening the trained default
keeps everything it has learnt (the copy scores what the original scores) and gives the fine-tune that
follows four times the convolution weights per doubling of the width:

    .venv/bin/python scripts/widen_model.py models/resnet18_attention_ferplus --factor 2 --out runs/w32/start
    .venv/bin/python -m ferlib finetune runs/w32/start.json --adapt train ...   # scripts/train_ferplus_wide.sh

The card keeps the classes, input and data of the original; `training.widened_from` names the
original's model, weights hash and training, and its metrics are dropped (they were measured on other
weights).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ferlib.errors import InputError  # noqa: E402
from ferlib.inference.checkpoint import base_of, read_checkpoint, save_checkpoint  # noqa: E402
from ferlib.models.resnet import ResNet18Attention, widen  # noqa: E402


def widen_checkpoint(ref, out, factor: float = 2, noise: float = 0.01, seed: int = 0) -> dict:
    """Read the checkpoint `ref`, widen it by `factor` and save it at `out`; returns the new card."""
    path, model, card = read_checkpoint(ref)
    if not isinstance(model, ResNet18Attention):
        raise InputError(f"{path}: widening is for resnet18_attention checkpoints; this one is "
                         f"{card['model']['name']}")
    wide = widen(model, factor, noise=noise, seed=seed).eval()
    x = torch.zeros(2, 1, 48, 48).uniform_(-2, 2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        gap = float((wide({"image": x}) - model({"image": x})).abs().max())
    new_card = {**base_of(card), "metrics": {},
                "training": {"widened_from": {"model": card["model"], "classes": card["classes"],
                                              "weights_sha256": card["weights_sha256"],
                                              "training": card.get("training", {})},
                             "widen": {"factor": factor, "noise": noise, "seed": seed,
                                       "max_logit_change_on_noise_input": gap}}}
    save_checkpoint(wide, out, new_card)
    return {**new_card, "model": wide.config()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a resnet18_attention checkpoint (.json/.safetensors) or shipped name")
    p.add_argument("--factor", type=float, default=2, help="width multiplier (default 2: width 16 -> 32; 1.5: 32 -> 48)")
    p.add_argument("--noise", type=float, default=0.01,
                   help="symmetry-breaking noise, a fraction of each weight tensor's std (0 = exact copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output path stem (writes STEM.json and STEM.safetensors)")
    args = p.parse_args(argv)
    card = widen_checkpoint(args.model, args.out, args.factor, args.noise, args.seed)
    w = card["training"]["widen"]
    print(f"{args.out}: {card['model']['kwargs']} (largest logit change on noise input: "
          f"{w['max_logit_change_on_noise_input']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
