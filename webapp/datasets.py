"""Studio recordings -> model inputs (TensorSet) with the chunked split, for the Train and Evaluate pages."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from ferlib.data.importers import import_image_folder, import_recordings
from ferlib.data.splits import chunked_split
from ferlib.errors import FerError, InputError
from ferlib.inputs import InputSpec, TensorSet
from ferlib.normalize import normalize
from ferlib.store import Store


def studio_frame(store: Store, session_ids: Sequence[int]) -> pd.DataFrame:
    """The selected sessions' samples as ferlib.data rows (absolute paths) with the chunked split
    per emotion and session (first 70 % of each chunk train, next 15 % val, last 15 % test)."""
    rows = store.samples(session_ids).to_dict("records")
    if not rows:
        raise InputError(f"studio sessions {list(session_ids)} hold no samples")
    for r in rows:
        r["landmarks_path"] = str(store.path_of(r["landmarks_path"]))
        r["crop_path"] = str(store.path_of(r["crop_path"])) if isinstance(r["crop_path"], str) else None
    return chunked_split(import_recordings(rows))


def _baseline(df: pd.DataFrame, pts: np.ndarray, spec: InputSpec) -> dict[str, np.ndarray]:
    """Per session: mean normalised landmarks of its neutral samples (subject conditioning)."""
    out = {}
    for g in df["group"].unique():
        idx = np.flatnonzero((df["group"] == g).to_numpy() & (df["label"] == "neutral").to_numpy())
        if not len(idx):
            raise InputError(f"session {g!r} has no neutral samples: subject conditioning needs a neutral baseline")
        out[g] = normalize(pts[idx], spec.method).mean(0).astype(np.float32)
    return out


def tensor_set(df: pd.DataFrame, spec: InputSpec, classes: Sequence[str]) -> tuple[TensorSet, pd.DataFrame]:
    """A TensorSet of the rows of `df` whose label is in `classes` (and that have a crop when the
    spec needs one); returns it with the kept rows (same order)."""
    keep = df["label"].isin(list(classes))
    if spec.needs_crops:
        keep &= df["path"].astype(str) != ""
    df = df[keep].reset_index(drop=True)
    if df.empty:
        raise InputError(f"no samples with a class among {list(classes)}"
                         + (" and a stored face crop (landmarks-only sessions have none)" if spec.needs_crops else ""))
    labels = np.array([list(classes).index(c) for c in df["label"]], dtype=np.int64)
    pts = np.stack([np.load(p, allow_pickle=False) for p in df["landmarks_path"]]).astype(np.float32)
    crops = None
    if spec.needs_crops:
        crops = np.stack([cv2.resize(cv2.imread(p, cv2.IMREAD_GRAYSCALE), (spec.image_size, spec.image_size),
                                     interpolation=cv2.INTER_AREA) for p in df["path"]])
    if not spec.subtract_baseline:
        return TensorSet.build(spec, labels, pts, crops), df
    base = _baseline(df, pts, spec)
    parts, order = [], []
    for g in df["group"].unique():
        idx = np.flatnonzero((df["group"] == g).to_numpy())
        parts.append(TensorSet.build(spec, labels[idx], pts[idx], None if crops is None else crops[idx],
                                     baseline=base[g]))
        order.append(idx)
    ts = TensorSet({k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors},
                   torch.cat([p.labels for p in parts]), spec)
    return ts, df.iloc[np.concatenate(order)].reset_index(drop=True)


def split_sets(ts: TensorSet, df: pd.DataFrame) -> dict[str, tuple[TensorSet, pd.DataFrame]]:
    """{split: (TensorSet, rows)} for the non-empty splits of `df` (aligned with `ts`)."""
    out = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero(df["split"].to_numpy() == name)
        if len(idx):
            out[name] = (ts.subset(torch.from_numpy(idx)), df.iloc[idx].reset_index(drop=True))
    return out


def folder_frame(path: str, limit: int = 500, seed: int = 0) -> pd.DataFrame:
    """Up to `limit` images (a seeded sample, all splits) of a class-per-folder dataset or zip."""
    df = import_image_folder(path, on_unknown="skip")
    if len(df) > limit:
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    return df


def folder_inputs(df: pd.DataFrame, spec: InputSpec, classes: Sequence[str]) -> dict:
    """Model inputs of a folder dataset: {data: TensorSet of the detected faces, labels: all N,
    detected: (N,) bool, poses: (N, 3)}; a missed face counts as wrong in evaluate's *_all metrics."""
    from ferlib.data.cache import extract_crops, extract_landmarks
    from ferlib.normalize import head_pose

    df = df[df["label"].isin(list(classes))].reset_index(drop=True)
    if df.empty:
        raise InputError(f"the dataset has no images of the model's classes {list(classes)}")
    ext = extract_landmarks(df, workers=1, progress=False)
    det = ext.detected.astype(bool)
    if not det.any():
        raise InputError("no face found in any image of the dataset")
    labels = np.array([list(classes).index(c) for c in df["label"]], dtype=np.int64)
    poses = np.full((len(df), 3), np.nan)
    try:
        poses[det] = np.asarray(head_pose(ext.landmarks[det]), dtype=np.float64).reshape(-1, 3)
    except FerError:  # no canonical face asset: poses stay unknown
        pass
    crops = extract_crops(df, size=spec.image_size, landmarks=ext, progress=False).images[det] \
        if spec.needs_crops else None
    data = TensorSet.build(spec, labels[det], ext.landmarks[det] if spec.needs_landmarks else None, crops)
    return {"data": data, "labels": labels, "detected": det, "poses": poses}
