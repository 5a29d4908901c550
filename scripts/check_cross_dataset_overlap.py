"""Near-duplicate images across datasets: does a training-only dataset hold evaluation images?

Every image is read as the model sees it (grey, resized to 48x48 when the dataset says so, e.g.
AffectNet), centred and scaled to unit length; pairs whose cosine similarity reaches --threshold
(default 0.98: the same picture, up to JPEG re-encoding and resizing) are counted per pair of
(dataset split). Use it before adding a dataset with --extra-train: an image of FER2013 PublicTest
or PrivateTest (or of the CK+ test subjects) inside it would leak evaluation data into training.

    .venv/bin/python scripts/check_cross_dataset_overlap.py ../shared/data/affectnet_subset.zip \
        cache/ckplus48_trainsubjects.zip --against ../shared/data/fer2013.zip ../shared/data/ckplus48.zip
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from ferlib.data.importers import read_image  # noqa: E402
from ferlib.data.tensors import import_dataset  # noqa: E402


def vectors(df, resize_to: int | None = None, size: int = 48) -> np.ndarray:
    """(N, size*size) float32 unit vectors of the centred grey images (read at `resize_to`, the
    dataset's, else `size`)."""
    resize_to = resize_to or size
    out = np.empty((len(df), size * size), np.float32)
    for i, p in enumerate(df["path"]):
        img = read_image(str(p), resize_to)
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
        if grey.shape != (size, size):
            grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
        v = grey.astype(np.float32).ravel()
        v -= v.mean()
        out[i] = v / max(float(np.linalg.norm(v)), 1e-6)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", help="datasets to check (every split)")
    ap.add_argument("--against", nargs="+", required=True, help="datasets whose splits they are compared with")
    ap.add_argument("--threshold", type=float, default=0.98)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    report = []
    ref = {}
    for path in args.against:
        ds = import_dataset(path)
        df = ds.table
        v = vectors(df, ds.resize_to)
        for s in sorted(set(df["split"])):
            m = (df["split"] == s).to_numpy()
            ref[(Path(path).name, s)] = (v[m], df[m].reset_index(drop=True))
        print(f"read {path}: {len(df)} images", file=sys.stderr)
    for path in args.datasets:
        ds = import_dataset(path)
        df = ds.table
        v = vectors(df, ds.resize_to)
        print(f"read {path}: {len(df)} images", file=sys.stderr)
        for (rname, rsplit), (rv, rdf) in ref.items():
            best = np.full(len(v), -1.0, np.float32)
            arg = np.zeros(len(v), np.int64)
            for i in range(0, len(rv), 4096):
                sim = v @ rv[i:i + 4096].T
                j = sim.argmax(1)
                s = sim[np.arange(len(v)), j]
                better = s > best
                best[better], arg[better] = s[better], j[better] + i
            hit = best >= args.threshold
            same_label = int((df["label"].to_numpy()[hit] == rdf["label"].to_numpy()[arg[hit]]).sum())
            row = {"dataset": Path(path).name, "against": rname, "split": rsplit, "n": int(len(v)),
                   "near_duplicates": int(hit.sum()), "same_label": same_label,
                   "by_label": df.loc[hit, "label"].value_counts().to_dict(),
                   "examples": [[str(df["path"].iat[k]).rpartition("!")[2], str(rdf["path"].iat[arg[k]]).rpartition("!")[2],
                                 round(float(best[k]), 4)] for k in np.flatnonzero(hit)[:5]]}
            report.append(row)
            print(f"{row['dataset']} vs {rname} {rsplit}: {row['near_duplicates']} of {row['n']} near-duplicates "
                  f"(cos >= {args.threshold}), {same_label} with the same label; {row['by_label']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
