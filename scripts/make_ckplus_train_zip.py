"""Write a zip holding only the CK+ images of one subject-split part (default: the train subjects).

`python -m ferlib finetune/train --extra-train DATASET` uses EVERY sample of DATASET for training,
so passing ckplus48.zip there would also train on the CK+ validation and test subjects. This script
applies the project's own subject split (`ferlib.data.subject_split`, the one `import_dataset` and
`ferlib evaluate --data ckplus48.zip --split test` use, same seed) and copies only the chosen
split's members, byte for byte, into a new zip with the same layout (`ckplus48/<class>/*.png`).

The output name must start with "ckplus" so that `--kind auto` still reads it as CK+.
Never commit the output: it holds dataset images (write it under cache/ or /tmp).

    .venv/bin/python scripts/make_ckplus_train_zip.py ../shared/data/ckplus48.zip \
        cache/ckplus48_trainsubjects.zip [--split train] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ferlib.data import import_ckplus, subject_split  # noqa: E402
from ferlib.data.importers import split_zip_path, write_zip_subset  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="ckplus48.zip")
    ap.add_argument("out", help="zip to write; its name must start with 'ckplus'")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"))
    ap.add_argument("--seed", type=int, default=0, help="subject_split seed (ferlib's --seed; default 0)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not out.name.lower().startswith("ckplus"):
        ap.error("the output name must start with 'ckplus' (so --kind auto reads it as CK+)")
    df = subject_split(import_ckplus(args.source).table, seed=args.seed)
    keep = df[df["split"] == args.split]
    members = [split_zip_path(p)[1] for p in keep["path"]]
    write_zip_subset(args.source, members, out)
    subjects = sorted(keep["subject"].unique())
    print(f"wrote {out}: {len(keep)} images of {len(subjects)} {args.split} subjects (seed {args.seed}); "
          f"labels {keep['label'].value_counts().sort_index().to_dict()}")
    for name in ("train", "val", "test"):
        part = df[df["split"] == name]
        print(f"  {name}: {len(part)} images, {part['subject'].nunique()} subjects: "
              f"{' '.join(sorted(part['subject'].unique()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
