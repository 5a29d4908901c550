"""Choose the personal-adaptation settings on DEVELOPMENT people only (the first --dev people of the
cross-session protocol, sorted by id); scripts/personal_protocol.py then reports the chosen defaults
through the user's commands on all people, and docs/results.md gives the figure on the others apart.

    .venv/bin/python scripts/personal_sweep.py --sets /tmp/ferlib-personal --dev 8

Fast path for a sweep (library calls, not the CLI): A and B are prepared once per person
(ferlib.data.tensors.prepare, the training crops), the base model's embeddings are reused, and each
setting refits the head on them. Prints mean accuracy on B per setting.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

from ferlib.data.tensors import import_dataset, prepare  # noqa: E402
from ferlib.inference.checkpoint import card_spec, card_tta_flip, read_checkpoint  # noqa: E402
from ferlib.training.evaluate import predict_outputs  # noqa: E402
from ferlib.training.personal import AdaptConfig, adapt_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="/tmp/ferlib-personal")
    ap.add_argument("--base", default="resnet18_attention_fer2013_long")
    ap.add_argument("--dev", type=int, default=8)
    ap.add_argument("--cache-dir", default="/tmp/ferlib-sweep-cache")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, base, card = read_checkpoint(args.base)
    spec, classes = card_spec(card), card["classes"]
    people = sorted(p for p in Path(args.sets).iterdir() if (p / "A").is_dir())[:args.dev]
    data = []
    for p in people:
        a = prepare(import_dataset(p / "A"), spec, classes, cache_dir=args.cache_dir).tensor_set()
        b = prepare(import_dataset(p / "B"), spec, classes, cache_dir=args.cache_dir)
        data.append((a, b))
    grid = [{"method": "none"}]
    grid += [{"method": "prototype", "strength": s, "copies": c} for s, c in itertools.product((0.5, 1.0, 2.0, 4.0), (0, 8))]
    grid += [{"method": "head", "l2sp": l2, "steps": st, "copies": c}
             for l2, st, c in itertools.product((0.001, 0.01, 0.1), (100, 300), (0, 8))]
    tta = card_tta_flip(card)
    for setting in grid:
        accs = []
        for a, b in data:
            model = copy.deepcopy(base)
            if setting["method"] != "none":
                adapt_model(model, a, classes, AdaptConfig(**setting))
            probs = predict_outputs(model, b.tensor_set(), tta_flip=tta).numpy()
            pred = np.full(len(b), -1)
            pred[b.detected] = probs.argmax(1)
            accs.append(float((pred == b.labels).mean()))
        print(f"{setting}: mean {np.mean(accs):.3f} min {np.min(accs):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
