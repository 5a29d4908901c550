"""Write a zip of the AffectNet subset WITHOUT its held-out images (the first `--per-class` of each class by
name, `ferlib.data.first_per_class`), which scripts/make_eval_sets.py turns into the affectnet_tight350 test set.

`ferlib train/finetune --data` or `--extra-train` on the whole subset would train on those test faces; this
copies every other member byte for byte into a new zip with the same layout. The output name must contain
"affectnet" so that `--kind auto` still reads it as AffectNet (resized to one size: its resolutions leak the
class). Never commit the output: it holds dataset images (write it under cache/ or /tmp).

    .venv/bin/python scripts/make_affectnet_train_zip.py ../shared/data/affectnet_subset.zip \
        cache/affectnet_subset_train.zip [--per-class 60]

`--train-only` also leaves out the seeded 10 % validation share that `ferlib train/finetune` makes of the
result (`import_dataset`'s split): a zip for `--extra-train`, which counts the AffectNet train rows twice
without training on the validation faces (docs/results.md, "Two label sources").
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ferlib.data import first_per_class, import_affectnet  # noqa: E402
from ferlib.data.importers import split_zip_path, write_zip_subset  # noqa: E402
from ferlib.data.tensors import import_dataset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="affectnet_subset.zip")
    ap.add_argument("out", help="zip to write; its name must contain 'affectnet'")
    ap.add_argument("--per-class", type=int, default=60, help="held-out images per class (make_eval_sets.py's)")
    ap.add_argument("--train-only", action="store_true",
                    help="also leave out the validation share ferlib train/finetune make of the output")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if "affectnet" not in out.name.lower():
        ap.error("the output name must contain 'affectnet' (so --kind auto reads it as AffectNet)")
    df = import_affectnet(args.source).table
    held = first_per_class(df, args.per_class)
    members = [split_zip_path(p)[1] for p in df.loc[~held, "path"]]
    write_zip_subset(args.source, members, out)
    if args.train_only:
        table = import_dataset(out).table
        members = [split_zip_path(p)[1] for p in table.loc[table["split"] == "train", "path"]]
        write_zip_subset(args.source, members, out)
    print(f"wrote {out}: {len(members)} images; held out {int(held.sum())} "
          f"({df.loc[held, 'label'].value_counts().sort_index().to_dict()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
