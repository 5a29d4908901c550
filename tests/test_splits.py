"""Chunked (recordings) and subject (CK+) splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferlib.data import chunked_split, import_ckplus, split_counts, subject_split
from ferlib.errors import InputError
from tests.helpers import shared_file


def _recordings(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"path": f"{s}/{e}/{f}.png", "label": e, "split": "", "subject": "", "group": s,
             "source": "studio", "frame": f}
            for s, n in (("s1", 100), ("s2", 37), ("s3", 5))
            for e in ("happy", "sad", "surprise") for f in range(n + len(e))]
    return pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)  # shuffled


def test_chunked_split_never_straddles():
    df = chunked_split(_recordings())
    assert set(df["split"]) == {"train", "val", "test"}
    for (label, group), g in df.groupby(["label", "group"]):
        frames = {s: g.loc[g["split"] == s, "frame"] for s in ("train", "val", "test")}
        assert len(frames["train"]) > 0, (label, group)
        # contiguous chunks in frame order: every train frame < every val frame < every test frame
        if len(frames["val"]):
            assert frames["train"].max() < frames["val"].min()
        if len(frames["test"]):
            last = frames["val"].max() if len(frames["val"]) else frames["train"].max()
            assert frames["train"].max() <= last < frames["test"].min()
    big = df[(df["group"] == "s1") & (df["label"] == "happy")]  # 105 frames
    assert big["split"].value_counts().to_dict() == {"train": 74, "val": 15, "test": 16}


def test_chunked_split_fractions_and_errors():
    df = chunked_split(_recordings(), fractions=(0.5, 0.0, 0.5))
    assert set(df["split"]) == {"train", "test"}
    with pytest.raises(InputError, match="fractions"):
        chunked_split(_recordings(), fractions=(0.7, 0.2, 0.2))
    with pytest.raises(InputError, match="no column"):
        chunked_split(_recordings().drop(columns="frame"))
    original = _recordings()
    chunked_split(original)
    assert set(original["split"]) == {""}  # input untouched


def _subjects(n_subjects: int = 40, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"path": f"S{s:03d}_{i}", "label": "happy", "split": "", "subject": f"S{s:03d}", "group": "",
             "source": "ck"} for s in range(n_subjects) for i in range(int(rng.integers(1, 12)))]
    return pd.DataFrame(rows)


def test_subject_split_keeps_subjects_together():
    df = _subjects()
    out = subject_split(df, val_frac=0.15, test_frac=0.2, seed=3)
    assert out.groupby("subject")["split"].nunique().max() == 1
    frac = out["split"].value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.1 and abs(frac["val"] - 0.15) < 0.1 and frac["train"] > 0.5
    assert out["split"].equals(subject_split(df, 0.15, 0.2, seed=3)["split"])  # deterministic
    assert not out["split"].equals(subject_split(df, 0.15, 0.2, seed=4)["split"])
    counts = split_counts(out)
    assert counts.loc["total", "total"] == len(df)


def test_subject_split_needs_subjects():
    df = _subjects()
    df.loc[3, "subject"] = ""
    with pytest.raises(InputError, match="subject"):
        subject_split(df)
    with pytest.raises(InputError, match="fractions"):
        subject_split(_subjects(), val_frac=0.6, test_frac=0.6)


@pytest.mark.data
def test_real_ckplus_subject_split():
    ck = subject_split(import_ckplus(shared_file("ckplus48.zip")).table, 0.15, 0.15, seed=0)
    per_subject = ck.groupby("subject")["split"].nunique()
    assert per_subject.max() == 1, "a subject appears in two splits"
    sets = {s: set(ck.loc[ck["split"] == s, "subject"]) for s in ("train", "val", "test")}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert ck.groupby("group")["split"].nunique().max() == 1  # sequences never straddle either
    frac = ck["split"].value_counts(normalize=True)
    assert 0.1 < frac["test"] < 0.25 and 0.1 < frac["val"] < 0.25
