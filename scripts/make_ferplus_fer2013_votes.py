"""Write a FER+ zip whose Train votes also count FER2013's own label, as K extra taggers (issue 22).

FER+ relabelled the FER2013 images with 10 taggers; FER2013's single label is a second, noisier source for
the same faces. The old FER2013-trained default read AffectNet's angry faces and the turned sad faces better
than the FER+-trained one (docs/results.md), so this keeps FER2013's label in the training targets as K more
votes beside the 10: each FER+ Train image is matched to its FER2013 Training JPEG by thumbnail
(`compare_fer_labels.match`), and K is added to the vote column of FER2013's label. Valid and Test, and
unmatched Train rows, are copied unchanged, so validation and the FER+ test figures keep FER+'s labels.
Images are copied byte for byte (the landmark and crop caches, keyed by content, are reused).

    .venv/bin/python scripts/make_ferplus_fer2013_votes.py --votes 3 --out cache/ferplus_fer2013v3.zip

The output name must start with "ferplus" (so `--kind auto` reads it as FER+). Never commit it: it holds
dataset images (write it under cache/ or /tmp).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_fer_labels import match  # noqa: E402

from ferlib.classes import canonical  # noqa: E402
from ferlib.data import import_fer2013  # noqa: E402
from ferlib.data.importers import FERPLUS_VOTES, open_zip, write_zip_subset, zip_path  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--votes", type=float, default=3, help="votes FER2013's label counts for (FER+ has 10)")
    ap.add_argument("--out", required=True, help="zip to write; its name must start with 'ferplus'")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not out.name.lower().startswith("ferplus"):
        ap.error("the output name must start with 'ferplus' (so --kind auto reads it as FER+)")
    if not args.votes > 0:
        ap.error("--votes must be > 0")
    data = Path(args.shared) / "data"
    src = data / "ferplus.zip"
    column = {canonical(v): i for i, v in enumerate(FERPLUS_VOTES[:8])}
    fe = import_fer2013(data / "fer2013.zip").table
    fe = fe[fe["split"] == "train"].reset_index(drop=True)
    with open_zip(src) as zf:
        names = zf.namelist()
        label_csv = next(n for n in names if PurePosixPath(n).parts[-2:] == ("FER2013Train", "label.csv"))
        rows = [r for r in csv.reader(zf.read(label_csv).decode("utf-8").splitlines()) if r]
    prefix, present = label_csv[: -len("label.csv")], set(names)
    listed = [r[0].strip() for r in rows if prefix + r[0].strip() in present]
    j, ok = match([zip_path(src, prefix + name) for name in listed], fe["path"])
    by_name = {name: fe["label"].iat[int(jj)] for name, jj, good in zip(listed, j, ok) if good}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        label = by_name.get(r[0].strip())
        if label is not None:
            votes = [float(x) for x in r[2:]]
            votes[column[label]] += args.votes
            r = r[:2] + [f"{v:g}" for v in votes]
        w.writerow(r)
    write_zip_subset(src, names, out, contents={label_csv: buf.getvalue().encode("utf-8")})
    added = Counter(by_name.values())
    print(f"wrote {out}: {len(by_name)} of {len(rows)} FER+ Train rows matched a FER2013 Training image and "
          f"count its label as {args.votes:g} more votes ({dict(added)}); Valid and Test unchanged")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
