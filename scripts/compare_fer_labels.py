"""How often FER2013's own label agrees with the FER+ majority label, on the same test images.

    .venv/bin/python scripts/compare_fer_labels.py [--shared ../shared] [--split test]

FER+ Test is FER2013 PrivateTest re-rendered (PNG from the original pixels), without a shared file name: each
FER+ image is matched to its FER2013 JPEG by the nearest z-scored 16x16 thumbnail (a match counts when the
mean squared z-difference is below 0.2; JPEG noise and a brightness offset keep it above 0). Prints the share
of matched images whose labels agree and the FER+ x FER2013 label table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ferlib.data import import_fer2013, import_ferplus, read_image  # noqa: E402


def thumbs(paths) -> np.ndarray:
    x = np.stack([cv2.resize(cv2.cvtColor(read_image(p), cv2.COLOR_BGR2GRAY), (16, 16),
                             interpolation=cv2.INTER_AREA).ravel().astype(np.float32) for p in paths])
    return (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-3)


def match(paths_a, paths_b, *, block: int = 2048, threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """For each image of `paths_a`, the index of its nearest image in `paths_b` by z-scored 16x16 thumbnail
    and whether it is a match (mean squared z-difference below `threshold`); computed in blocks of rows."""
    a, b = thumbs(paths_a), thumbs(paths_b)
    bb = (b ** 2).sum(1)[None]
    j = np.empty(len(a), np.int64)
    best = np.empty(len(a), np.float32)
    for s in range(0, len(a), block):
        d = (a[s:s + block] ** 2).sum(1)[:, None] + bb - 2 * a[s:s + block] @ b.T
        j[s:s + block], best[s:s + block] = d.argmin(1), d.min(1) / a.shape[1]
    return j, best < threshold


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--split", default="test", choices=("val", "test"))
    args = ap.parse_args(argv)
    data = Path(args.shared) / "data"
    fp = import_ferplus(data / "ferplus.zip").table
    fe = import_fer2013(data / "fer2013.zip").table
    fp = fp[fp["split"] == args.split].reset_index(drop=True)
    fe = fe[fe["split"] == args.split].reset_index(drop=True)
    j, ok = match(fp["path"], fe["path"])
    ours, theirs = fp["label"].to_numpy()[ok], fe["label"].to_numpy()[j[ok]]
    print(f"{int(ok.sum())} of {len(fp)} FER+ {args.split} images (with a majority label) matched a FER2013 image; "
          f"the labels agree on {float((ours == theirs).mean()):.1%}")
    print(pd.crosstab(pd.Series(ours, name="FER+ majority"), pd.Series(theirs, name="FER2013 label")).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
