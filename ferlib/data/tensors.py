"""Dataset -> model inputs: THE conversion used by the CLI, the training scripts and the app.

```python
ds = import_dataset("../shared/data/fer2013.zip")          # any importer's Dataset, splits set
prep = prepare(ds, spec, FER7)                               # labels, landmarks, detected, crops, poses
sets = split_prepared(prep)                                  # {"train": Prepared, "val": ..., "test": ...}
train(model, sets["train"].tensor_set(), sets["val"].tensor_set(), config)
metrics = evaluate(model, classes=FER7, **sets["test"].eval_inputs())   # misses counted as wrong
```

Landmarks come from the extraction cache (`extract_landmarks`), or, for studio recordings, from
each row's `landmarks_path` .npy (frame pixels). Grey crops come from the crop cache
(`extract_crops`, the same `face_crop` the live pipeline uses) or, for recordings, from the stored
crop PNG (`crop_path`) resized whole (read directly, never cached).

Which functions take a `Dataset` and which a plain DataFrame: the rule in `ferlib.data.dataset`
(rows only: a DataFrame; metadata too: a Dataset, or a bare DataFrame read as one without metadata).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from ferlib.classes import canonical
from ferlib.data.cache import Crops, detection_summary, extract_crops, extract_landmarks
from ferlib.data.dataset import Dataset
from ferlib.data.importers import (
    TARGET_PREFIX,
    import_affectnet,
    import_ckplus,
    import_fer2013,
    import_fer2013_csv,
    import_ferplus,
    import_image_folder,
    import_recordings,
    read_image,
    resize_square,
    target_columns,
)
from ferlib.data.splits import chunked_split, subject_split
from ferlib.errors import FerError, InputError
from ferlib.faces.normalize import head_pose, normalize
from ferlib.fsutil import sha256_file, sha256_files
from ferlib.inputs import InputSpec, TensorSet
from ferlib.store import Store
from ferlib.types import face_landmarks

SPLITS = ("train", "val", "test")
DATASET_KINDS = ("auto", "folder", "fer2013", "fer2013-csv", "ferplus", "affectnet", "ckplus", "studio")


@dataclass
class Prepared:
    """Model inputs of a dataset, row-aligned with `df` (the kept rows, index 0..N-1).

    labels: (N,) int64 indices into `classes`. landmarks: (N, 478, 3) float32 pixels, NaN rows where
    no face was found. face_found: (N,) bool, MediaPipe found a face (or the recording stored one).
    detected: (N,) bool, the rows that have model inputs (= face_found when the spec needs landmarks,
    else every row with a crop); the others count as wrong in evaluate's `*_all` metrics.
    crops: (N, S, S) uint8 grey crops (S = spec.image_size) or None when the spec needs none.
    poses: (N, 3) yaw/pitch/roll degrees, NaN where unknown. baselines: group -> (478, 3) neutral
    landmarks that `build_batch` normalises and subtracts ("*" = every row; per session: the mean of
    its neutral samples' normalised landmarks), None when the spec subtracts none.
    info: counts of dropped rows and where the data came from. targets: (N, C) float32 soft targets
    over `classes` (each row sums to 1) when the data carry label distributions (FER+'s ``t_<class>``
    columns; rows of other sources get their one-hot label), else None. frontal: (N,) bool, the rows
    whose crop was frontalised (framing "frontal": a frontalising model's turned-face expert reads them),
    None without crops. missed: (N,) bool, for image-only models (`InputSpec.box_framed`), the rows where
    `predict`'s face finding finds no face (neither face mesh nor the detector): they train on the whole
    image, and evaluation counts them as wrong (`evaluated`); None otherwise.
    """

    df: pd.DataFrame
    spec: InputSpec
    classes: tuple[str, ...]
    labels: np.ndarray
    landmarks: np.ndarray
    face_found: np.ndarray
    detected: np.ndarray
    crops: np.ndarray | None
    poses: np.ndarray
    baselines: dict[str, np.ndarray] | None = None
    info: dict = field(default_factory=dict)
    targets: np.ndarray | None = None
    frontal: np.ndarray | None = None
    missed: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def evaluated(self) -> np.ndarray:
        """(N,) bool: the rows evaluation reads (`detected`, less the `missed` ones)."""
        return self.detected if self.missed is None else self.detected & ~self.missed

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if len(self) else float("nan")

    def subset(self, idx) -> "Prepared":
        """The rows `idx` (indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(self, df=self.df.iloc[idx].reset_index(drop=True), labels=self.labels[idx],
                       landmarks=self.landmarks[idx], face_found=self.face_found[idx],
                       detected=self.detected[idx], crops=None if self.crops is None else self.crops[idx],
                       poses=self.poses[idx], info=dict(self.info),
                       targets=None if self.targets is None else self.targets[idx],
                       frontal=None if self.frontal is None else self.frontal[idx],
                       missed=None if self.missed is None else self.missed[idx])

    def tensor_set(self, mask=None) -> TensorSet:
        """TensorSet of the detected rows (and `mask`, (N,) bool), in row order."""
        rows = np.ones(len(self), bool) if mask is None else np.asarray(mask, bool)
        idx = np.flatnonzero(self.detected & rows)
        if not len(idx):
            raise InputError(f"no usable faces among {int(rows.sum())} rows (detection rate "
                             f"{self.detection_rate:.1%}): nothing to build model inputs from")
        lm = self.landmarks if self.spec.needs_landmarks else None
        targets = None if self.targets is None else torch.from_numpy(self.targets[idx])
        if not self.spec.subtract_baseline:
            return replace(_build(self.spec, self.labels, lm, self.crops, idx, None), targets=targets)
        groups = self.df["group"].astype(str).to_numpy()
        parts, order = [], []
        for g in dict.fromkeys(groups[idx]):
            assert self.baselines is not None, "subtract_baseline without baselines"
            base = self.baselines.get(g, self.baselines.get("*"))
            sel = idx[groups[idx] == g]
            parts.append(_build(self.spec, self.labels, lm, self.crops, sel, base))
            order.append(sel)
        inv = np.argsort(np.argsort(np.concatenate(order), kind="stable"), kind="stable")
        pos = torch.from_numpy(inv)
        return TensorSet({k: torch.cat([p.tensors[k] for p in parts])[pos] for k in parts[0].tensors},
                         torch.cat([p.labels for p in parts])[pos], self.spec, targets)

    def eval_inputs(self, mask=None) -> dict:
        """Keyword arguments of `ferlib.training.evaluate.evaluate` for the rows in `mask` (default all):
        labels of every row, data = TensorSet of the detected ones, detected_mask, poses."""
        m = np.ones(len(self), bool) if mask is None else np.asarray(mask, bool)
        poses = self.poses[m]
        return {"labels": self.labels[m], "data": self.tensor_set(m & self.evaluated),
                "detected_mask": self.evaluated[m], "poses": poses if np.isfinite(poses).any() else None}

    def summary(self) -> pd.DataFrame:
        """Images / usable faces / misses / rate per split and label (ferlib.data.detection_summary)."""
        return detection_summary(self.df, self.detected)


def _build(spec, labels, lm, crops, idx, baseline) -> TensorSet:
    return TensorSet.build(spec, labels[idx], None if lm is None else lm[idx],
                           None if crops is None else crops[idx], baseline=baseline)


# --------------------------------------------------------------------------- prepare
def _labels(df: pd.DataFrame, classes: tuple[str, ...], drop_unknown: bool) -> tuple[pd.DataFrame, np.ndarray, dict]:
    known = df["label"].astype(str).isin(classes)
    dropped = df.loc[~known, "label"].astype(str).value_counts().to_dict()
    if dropped and not drop_unknown:
        listed = ", ".join(f"{k!r} ({v} rows)" for k, v in sorted(dropped.items()))
        raise InputError(f"dataset labels {listed} are not among the model's classes {list(classes)}; "
                         "pass drop_unknown=True (CLI: --drop-unknown) to leave those rows out")
    df = df[known].reset_index(drop=True)
    if df.empty:
        raise InputError(f"the dataset has no samples of the model's classes {list(classes)}")
    return df, np.array([classes.index(c) for c in df["label"].astype(str)], dtype=np.int64), dropped


def _is_recording(df: pd.DataFrame) -> bool:
    return "landmarks_path" in df.columns


def _load_npy(path: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"landmarks file {path}: cannot be read ({e})") from None
    return face_landmarks(a, f"landmarks file {path}")


def landmarks_of(data: Dataset | pd.DataFrame, resize_to=None, **extract_kw):
    """(landmarks (N, 478, 3) NaN for misses, found (N,) bool, Extraction of the extracted rows or None):
    a recording row's stored `landmarks_path` .npy, else `extract_landmarks` (the cache; `extract_kw`:
    workers, progress, callback, extractor_kwargs, and cache_dir whose `landmarks/` folder holds it).
    `resize_to` defaults to the Dataset's."""
    ds = Dataset.of(data)
    df = ds.table
    resize_to = resize_to if resize_to is not None else ds.resize_to
    n = len(df)
    lm = np.full((n, 478, 3), np.nan, np.float32)
    found = np.zeros(n, bool)
    stored = (df["landmarks_path"].fillna("").astype(str) != "").to_numpy() if _is_recording(df) \
        else np.zeros(n, bool)
    for i in np.flatnonzero(stored):
        lm[i], found[i] = _load_npy(str(df["landmarks_path"].iat[i])), True
    rest = np.flatnonzero(~stored)
    ex = None
    if len(rest):
        root = extract_kw.get("cache_dir")
        ex = extract_landmarks(df.iloc[rest], resize_to=resize_to,
                               **{**extract_kw, "cache_dir": None if root is None else Path(root) / "landmarks"})
        lm[rest], found[rest] = ex.landmarks, ex.detected
    return lm, found, ex


def _crops(df: pd.DataFrame, ex, size: int, resize_to, extract_kw: dict, framing: str) -> Crops:
    """Grey crops: stored crop PNGs resized whole (recordings), else extract_crops' auto mode (the found
    face cut as `framing` says for large images, as the live pipeline cuts it; the image itself for small)."""
    if _is_recording(df):  # the studio's own crops: read, never copied into the cache
        crops = (np.stack([resize_square(cv2.cvtColor(read_image(str(p)), cv2.COLOR_BGR2GRAY), size)
                           for p in df["path"]]) if len(df) else np.zeros((0, size, size), np.uint8))
        return Crops(crops, cropped=np.zeros(len(df), bool), frontal=np.zeros(len(df), bool),
                     found=np.ones(len(df), bool))
    root = extract_kw.get("cache_dir")
    return extract_crops(df, size=size, landmarks=ex, resize_to=resize_to, progress=extract_kw.get("progress", False),
                         cache_dir=None if root is None else Path(root) / "crops", framing=framing,
                         extractor_kwargs=extract_kw.get("extractor_kwargs"))


def _poses(df: pd.DataFrame, lm: np.ndarray, found: np.ndarray) -> np.ndarray:
    poses = np.full((len(df), 3), np.nan)
    if {"yaw", "pitch", "roll"} <= set(df.columns):
        poses[:] = df[["yaw", "pitch", "roll"]].to_numpy(dtype=np.float64)
    todo = found & ~np.isfinite(poses).all(1)
    if todo.any():
        try:
            poses[todo] = np.asarray(head_pose(lm[todo]), dtype=np.float64).reshape(-1, 3)
        except FerError:  # no canonical face asset: poses stay unknown
            pass
    return poses


def _neutral_baselines(df: pd.DataFrame, lm: np.ndarray, found: np.ndarray, spec: InputSpec) -> dict[str, np.ndarray]:
    """Per group (session): mean normalised landmarks of its neutral samples."""
    groups = df["group"].astype(str).to_numpy()
    neutral = (df["label"].astype(str) == "neutral").to_numpy() & found
    out = {}
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero((groups == g) & neutral)
        if not len(idx):
            raise InputError(f"group {g or '<none>'!r} has no neutral samples with a face: subject conditioning "
                             "needs a neutral baseline (record neutral, or pass baseline=)")
        out[g] = normalize(lm[idx], spec.method).mean(0).astype(np.float32)
    return out


def prepare(data: Dataset | pd.DataFrame, spec: InputSpec, classes: Sequence[str], *, resize_to: int | None = None,
            baseline=None, drop_unknown: bool = False, workers: int | None = None,
            cache_dir=None, progress: bool = False, callback=None, extractor_kwargs: dict | None = None,
            framing: str | None = None) -> Prepared:
    """Labels, landmarks, detected mask, crops and poses of every row of a Dataset (or bare DataFrame).

    Rows whose label is not in `classes`: InputError naming them, or dropped with `drop_unknown`
    (counted in `info["dropped_labels"]`). When the spec needs crops, recording rows without a stored
    crop (landmarks-only sessions) are left out (`info["no_crop"]`). `resize_to` defaults to
    the Dataset's ``resize_to`` (AffectNet). baseline: (478, 3) neutral landmarks (pixels) for every
    row when spec.subtract_baseline; default: each group's (session's) mean neutral landmarks.
    workers, progress, callback(done, total): passed to `extract_landmarks` (progress also to
    `extract_crops`; an exception the callback raises cancels); cache_dir: a folder whose
    `landmarks/` and `crops/` hold the caches (default `ferlib.data.default_cache_dir`).
    extractor_kwargs: LandmarkExtractor options of the extraction (e.g. ``{"keypoint_model": PATH}``,
    the keypoint-aligned retry of misses, ferlib.faces.realign).
    framing: how a face found in a large image is cropped (ferlib.data.cache.FRAMINGS); default: on its
    detector box for image-only models (`InputSpec.box_framed`), else on its landmarks, as `predict` cuts
    them; "frontal" for a model whose card names a turned-face expert (`Prepared.frontal`).
    """
    classes = tuple(canonical(c) for c in classes)
    ds = Dataset.of(data)
    df = ds.table
    if not isinstance(df, pd.DataFrame) or not {"path", "label"} <= set(df.columns):
        raise InputError("prepare: expected an importer's Dataset (or DataFrame) with 'path' and 'label' columns")
    resize_to = resize_to if resize_to is not None else ds.resize_to
    df, labels, dropped = _labels(df, classes, drop_unknown)
    info: dict = {"dropped_labels": dropped, "no_crop": 0}
    if spec.needs_crops and _is_recording(df):
        has_crop = df["path"].astype(str).ne("").to_numpy()
        info["no_crop"] = int((~has_crop).sum())
        df, labels = df[has_crop].reset_index(drop=True), labels[has_crop]
        if df.empty:
            raise InputError("this model needs face crops, and the recordings have none "
                             "(landmarks-only sessions store landmarks only)")
    extract_kw = {"workers": workers, "cache_dir": cache_dir, "progress": progress, "callback": callback}
    lm, found, ex = landmarks_of(ds.with_table(df), resize_to, extractor_kwargs=extractor_kwargs, **extract_kw)
    info["errors"] = ex.errors if ex is not None else {}
    crops = frontal = missed = None
    if spec.needs_crops:
        framing = framing or ("box" if spec.box_framed else "landmarks")
        got = _crops(df, ex, spec.image_size, resize_to, {**extract_kw, "extractor_kwargs": extractor_kwargs}, framing)
        crops, frontal = got.images, got.frontal
        missed = ~got.found if spec.box_framed else None
    detected = found.copy() if spec.needs_landmarks else np.ones(len(df), bool)
    baselines = None
    if spec.subtract_baseline:
        if baseline is not None:
            baselines = {"*": face_landmarks(baseline, "baseline")}
        else:
            if "group" not in df.columns:
                raise InputError("subject conditioning needs a 'group' column or baseline=")
            baselines = _neutral_baselines(df, lm, found, spec)
    return Prepared(df=df, spec=spec, classes=classes, labels=labels, landmarks=lm, face_found=found,
                    detected=detected, crops=crops, poses=_poses(df, lm, found), baselines=baselines, info=info,
                    targets=soft_targets(df, labels, classes), frontal=frontal, missed=missed)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) float32 one-hot rows of class indices."""
    out = np.zeros((len(labels), n_classes), np.float32)
    out[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return out


def soft_targets(df: pd.DataFrame, labels: np.ndarray, classes: tuple[str, ...]) -> np.ndarray | None:
    """(N, C) label distributions over `classes` from a table's ``t_<class>`` columns (FER+), renormalised
    over the model's classes; a row without any (NaN, or no mass on these classes) gets its one-hot label.
    None when the table has no such columns."""
    if not set(target_columns()) <= set(df.columns):
        return None
    t = df[[TARGET_PREFIX + c for c in classes]].to_numpy(dtype=np.float64)
    t = np.where(np.isfinite(t), t, 0.0)
    mass = t.sum(1)
    out = one_hot(labels, len(classes))
    ok = mass > 0
    out[ok] = (t[ok] / mass[ok, None]).astype(np.float32)
    return out


def concat_prepared(parts: Sequence[Prepared]) -> Prepared:
    """One Prepared from several with the same spec and classes (e.g. FER2013 + AffectNet)."""
    if not parts:
        raise InputError("concat_prepared: nothing to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if p.classes != first.classes or p.spec != first.spec:
            raise InputError("concat_prepared: every part needs the same classes and InputSpec")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    baselines: dict[str, np.ndarray] | None = None
    if first.baselines is not None:
        baselines = {}
        for p in parts:
            baselines.update(p.baselines or {})  # every part has them: one spec
    df = pd.concat([p.df for p in parts], ignore_index=True)
    targets = None
    if any(p.targets is not None for p in parts):  # hard-label parts join as one-hot rows
        targets = np.concatenate([p.targets if p.targets is not None else one_hot(p.labels, len(first.classes))
                                  for p in parts])
    frontal = (None if first.crops is None else
               np.concatenate([p.frontal if p.frontal is not None else np.zeros(len(p), bool) for p in parts]))
    missed = None if first.missed is None else np.concatenate(
        [p.missed if p.missed is not None else np.zeros(len(p), bool) for p in parts])
    return Prepared(df=df, spec=first.spec, classes=first.classes, labels=cat("labels"), landmarks=cat("landmarks"),
                    face_found=cat("face_found"), detected=cat("detected"),
                    crops=None if first.crops is None else cat("crops"), poses=cat("poses"),
                    baselines=baselines, info={"parts": [p.info for p in parts]}, targets=targets, frontal=frontal,
                    missed=missed)


def split_prepared(prepared: Prepared, df: pd.DataFrame | None = None) -> dict[str, Prepared]:
    """{split: Prepared} for the non-empty train/val/test splits of `prepared.df` (or of `df`, a
    DataFrame row-aligned with it whose `split` column is used instead)."""
    split = (prepared.df if df is None else df)["split"].astype(str).to_numpy()
    if len(split) != len(prepared):
        raise InputError(f"split_prepared: {len(split)} split labels for {len(prepared)} prepared rows")
    return {s: prepared.subset(split == s) for s in SPLITS if (split == s).any()}


# --------------------------------------------------------------------------- datasets
def ensure_val_split(df: pd.DataFrame, val_frac: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Copy of `df` where rows without a split train and, when no row is "val", a seeded stratified
    `val_frac` of each label's training rows (at least one of any label with 2+) validates."""
    out = df.copy()
    split = out["split"].astype(str).replace("", "train").to_numpy().copy()
    if not (split == "val").any():
        rng = np.random.default_rng(seed)
        labels = out["label"].astype(str).to_numpy()
        for lab in sorted(set(labels)):
            idx = np.flatnonzero((labels == lab) & (split == "train"))
            k = max(1, int(round(val_frac * len(idx)))) if len(idx) >= 2 else 0
            split[rng.permutation(idx)[:k]] = "val"
    out["split"] = split
    return out


def detect_kind(path) -> str:
    """Dataset kind of a path: studio (a folder with catalogue.sqlite), fer2013-csv (.csv), ferplus /
    fer2013 / affectnet / ckplus by name (ferplus*, fer2013*, *affectnet*, ck*), else folder
    (class-per-folder)."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir() and (p / "catalogue.sqlite").is_file():
        return "studio"
    if p.suffix.lower() == ".csv":
        return "fer2013-csv"
    if name.startswith(("ferplus", "fer+")):
        return "ferplus"
    if name.startswith("fer2013"):
        return "fer2013"
    if "affectnet" in name:
        return "affectnet"
    if name.startswith(("ckplus", "ck+", "ck48")):
        return "ckplus"
    return "folder"


def import_dataset(path, kind: str = "auto", *, val_frac: float = 0.1, seed: int = 0) -> Dataset:
    """Import a dataset with train/val(/test) splits: the source's own split (FER2013, FER+), the subject
    split (CK+), the chunked split (studio recordings), else every row trains and a seeded stratified
    `val_frac` of it validates. The Dataset's `kind` and `root` say what was read."""
    if kind not in DATASET_KINDS:
        raise InputError(f"dataset kind {kind!r} is not one of {list(DATASET_KINDS)}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"dataset {p}: no such file or folder")
    kind = detect_kind(p) if kind == "auto" else kind
    if kind == "studio":
        if not (p / "catalogue.sqlite").is_file():
            raise InputError(f"dataset {p}: not a studio data folder (no catalogue.sqlite)")
        ds = import_recordings(Store(p))
        ds = ds.with_table(chunked_split(ds.table))
    elif kind == "ckplus":
        ds = import_ckplus(p)
        ds = ds.with_table(subject_split(ds.table, seed=seed))
    else:
        readers: dict[str, Callable[[Path], Dataset]] = {
            "folder": import_image_folder, "fer2013": import_fer2013, "fer2013-csv": import_fer2013_csv,
            "ferplus": import_ferplus, "affectnet": import_affectnet}
        reader = readers[kind]
        ds = reader(p)
    return replace(ds, table=ensure_val_split(ds.table, val_frac, seed), kind=kind, root=str(p.resolve()))


def dataset_sha256(data: Dataset | pd.DataFrame) -> str:
    """sha256 of a dataset's input: the file itself (zip, csv), or for folders the sorted
    (relative path, sha256) of every file its rows read (images, crops, landmark files)."""
    ds = Dataset.of(data)
    df = ds.table
    root = Path(ds.root)
    if root.is_file():
        return sha256_file(root)
    files: set[str] = set()
    for col in ("path", "landmarks_path"):
        if col in df.columns:
            files.update(str(v) for v in df[col] if isinstance(v, str) and v)
    return sha256_files(files, root)


__all__ = ["DATASET_KINDS", "Prepared", "concat_prepared", "dataset_sha256", "detect_kind", "ensure_val_split",
           "import_dataset", "landmarks_of", "one_hot", "prepare", "soft_targets", "split_prepared"]
