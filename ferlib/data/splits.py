"""Train/val/test splits that keep near-identical samples on one side.

`chunked_split` is the source design's split for recordings: per (label, group=session), in
frame order, the first part trains, the next validates, the last tests, so neighbouring frames
never straddle splits. `subject_split` puts each subject (CK+) wholly in one split.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ferlib.errors import InputError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"split fractions {fractions!r}: expected three non-negative numbers summing to 1")


def chunked_split(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  by: tuple[str, ...] = ("label", "group"), order: str = "frame") -> pd.DataFrame:
    """Copy of `df` with ``split`` set per contiguous chunk of each `by` group in `order`.

    Chunk sizes are rounded cumulatively: a group of n samples gets round(0.7 n) train, up to
    round(0.85 n) val, the rest test.
    """
    _check_fractions(fractions)
    missing = [c for c in (*by, order) if c not in df.columns]
    if missing:
        raise InputError(f"chunked_split: DataFrame has no column(s) {missing}")
    out = df.copy()
    split = np.empty(len(out), dtype=object)
    bounds = np.cumsum(fractions)[:2]
    for _, pos in out.reset_index(drop=True).groupby(list(by), sort=False).indices.items():
        ordered = pos[np.argsort(out[order].to_numpy()[pos], kind="stable")]
        n = len(ordered)
        cut_train, cut_val = (int(round(b * n)) for b in bounds)
        split[ordered[:cut_train]] = "train"
        split[ordered[cut_train:cut_val]] = "val"
        split[ordered[cut_val:]] = "test"
    out["split"] = split.astype(str)
    return out


def subject_split(df: pd.DataFrame, val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0) -> pd.DataFrame:
    """Copy of `df` with ``split`` assigned by subject: no subject appears in two splits.

    Subjects are shuffled with `seed` and fill test, then val, until each holds its fraction of
    the samples; the rest train. InputError if any row has no subject.
    """
    _check_fractions((1 - val_frac - test_frac, val_frac, test_frac))
    if "subject" not in df.columns or (df["subject"].astype(str) == "").any() or df["subject"].isna().any():
        raise InputError("subject_split: every row needs a non-empty 'subject'")
    sizes = df.groupby("subject", sort=True).size()
    subjects = sizes.index.to_numpy()[np.random.default_rng(seed).permutation(len(sizes))]
    targets = [("test", test_frac * len(df)), ("val", val_frac * len(df))]
    assign: dict[str, str] = {}
    k = 0
    for name, target in targets:
        filled = 0.0
        while k < len(subjects) and filled < target:
            assign[subjects[k]] = name
            filled += sizes[subjects[k]]
            k += 1
    for s in subjects[k:]:
        assign[s] = "train"
    out = df.copy()
    out["split"] = out["subject"].map(assign).astype(str)
    return out


def first_per_class(df: pd.DataFrame, n: int) -> np.ndarray:
    """(N,) bool mask of the first `n` rows of each label by sample path (sorted): the AffectNet subset's
    held-out tight crops (scripts/make_eval_sets.py) that training leaves out (make_affectnet_train_zip.py)."""
    if n < 0:
        raise InputError(f"first_per_class: n must be >= 0, got {n}")
    mask = np.zeros(len(df), bool)
    paths = df["path"].astype(str).to_numpy()
    labels = df["label"].astype(str).to_numpy()
    for lab in sorted(set(labels)):
        idx = np.flatnonzero(labels == lab)
        mask[idx[np.argsort(paths[idx], kind="stable")[:n]]] = True
    return mask


def split_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Samples per label (rows) and split (columns), with totals."""
    return pd.crosstab(df["label"], df["split"], margins=True, margins_name="total")
