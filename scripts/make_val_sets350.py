"""Validation twins of the 350 px held-out sets, for choosing settings on large images without looking
at the test sets (outside the repo: dataset images with research-only licences, never committed).

    .venv/bin/python scripts/make_val_sets350.py --out /tmp/ferlib-val350 [--shared ../shared]

Writes `affectnet_val350/<class>/` (the val rows `ferlib finetune --data cache/affectnet_subset_train.zip`
makes: a seeded 10 % per class) and `ck_val350/<class>/` (the CK+ validation subjects; not named
"ckplus…", which would be read as the CK+ layout). Each image is enlarged by scripts/make_eval_sets.py's
`write_enlarged`, as affectnet_tight350 and ckplus_test350 are from other rows.
scripts/fit_eval_blur.py reads them with --val-folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_eval_sets import write_enlarged  # noqa: E402

from ferlib.data.tensors import import_dataset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/ferlib-val350")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args()
    sources = {"affectnet_val350": Path("cache/affectnet_subset_train.zip"),
               "ck_val350": Path(args.shared) / "data" / "ckplus48.zip"}
    for name, path in sources.items():
        table = import_dataset(path).table
        rows = table[table["split"] == "val"]
        for i, r in enumerate(rows.itertuples()):
            write_enlarged(r.path, Path(args.out) / name / str(r.label) / f"{i:05d}.png")
        print(f"{name}: {len(rows)} images from the val rows of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
