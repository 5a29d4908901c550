"""Paired comparison of two checkpoints on the same FER2013 split (exact McNemar test).

    .venv/bin/python scripts/paired_compare.py models/resnet18_attention_fer2013_long \
        models/resnet18_attention_fer2013_all [--data ../shared/data/fer2013.zip] [--splits val test] [--no-tta]

Prints each model's accuracy, how many images only one of them gets right, and the two-sided exact
McNemar p-value (binomial on the discordant pairs): a difference of a few tenths of a point on
3,589 images is usually within noise.
"""
from __future__ import annotations

import argparse
from math import comb
from pathlib import Path

import torch

from ferlib.data.tensors import import_dataset, prepare, split_prepared  # noqa: E402
from ferlib.inference.checkpoint import card_spec, load_checkpoint  # noqa: E402
from ferlib.training.evaluate import predict_outputs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--data", default="../shared/data/fer2013.zip")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--no-tta", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    df = import_dataset(args.data)
    preds = {}
    for name in (args.a, args.b):
        model, card = load_checkpoint(name)
        spec = card_spec(card)
        sets = split_prepared(prepare(df, spec, card["classes"], workers=1))
        for s in args.splits:
            data = sets[s].tensor_set()
            out = predict_outputs(model, data, batch_size=512, tta_flip=not args.no_tta, spec=spec)
            preds[(name, s)] = (out.argmax(1).numpy(), data.labels.numpy())
    for s in args.splits:
        pa, y = preds[(args.a, s)]
        pb, _ = preds[(args.b, s)]
        ra, rb = pa == y, pb == y
        only_a, only_b = int((ra & ~rb).sum()), int((~ra & rb).sum())
        n = only_a + only_b
        p = min(1.0, 2 * sum(comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n) if n else 1.0
        print(f"{s} (n={len(y)}, tta={not args.no_tta}): {Path(args.a).name} {ra.mean():.4f}, {Path(args.b).name} "
              f"{rb.mean():.4f}; only the first right {only_a}, only the second right {only_b}; exact McNemar "
              f"p = {p:.3f}; same prediction {float((pa == pb).mean()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
