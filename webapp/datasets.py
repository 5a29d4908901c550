"""Studio sessions and imported datasets -> model inputs for the Train and Evaluate pages.

Thin callers of `ferlib.data.tensors` (`prepare`, `split_prepared`, `import_dataset`), the one
conversion from a dataset to model inputs. The pages hold plain DataFrames of rows (Studio sessions,
folder samples); an imported dataset stays a `ferlib.data.Dataset` (its root, kind, resize_to).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ferlib.data.dataset import Dataset
from ferlib.data.importers import import_image_folder, import_recordings
from ferlib.data.splits import chunked_split
from ferlib.data.tensors import Prepared, import_dataset, prepare, split_prepared
from ferlib.errors import InputError
from ferlib.inputs import InputSpec, TensorSet
from ferlib.store import Store


def studio_table(store: Store, session_ids: Sequence[int]) -> pd.DataFrame:
    """The selected sessions' samples as ferlib.data rows (absolute paths) with the chunked split
    per emotion and session (first 70 % of each chunk train, next 15 % val, last 15 % test)."""
    rows = store.samples(session_ids).to_dict("records")
    if not rows:
        raise InputError(f"studio sessions {list(session_ids)} hold no samples")
    for r in rows:
        r["landmarks_path"] = str(store.path_of(r["landmarks_path"]))
        r["crop_path"] = str(store.path_of(r["crop_path"])) if isinstance(r["crop_path"], str) else None
    return chunked_split(import_recordings(rows).table)


def dataset_path(path: str) -> Path:
    """A typed dataset path, checked: an existing folder, .zip or .csv file (InputError otherwise)."""
    text = str(path).strip()
    if not text:
        raise InputError("dataset path is empty: type a folder, .zip or .csv path")
    p = Path(text).expanduser()
    if not p.exists():
        raise InputError(f"dataset {p}: no such file or folder")
    if not (p.is_dir() or (p.is_file() and p.suffix.lower() in (".zip", ".csv"))):
        raise InputError(f"dataset {p}: expected a folder, a .zip or a .csv file")
    return p


def import_extra(path: str) -> Dataset:
    """A typed dataset path (`dataset_path`) imported (`import_dataset`, kind auto): the Train page's
    extra training data (ferlib.training.workflow.TrainingData.train_only: every row trains)."""
    return import_dataset(dataset_path(path))


def tensor_set(df: pd.DataFrame, spec: InputSpec, classes: Sequence[str]) -> tuple[TensorSet, pd.DataFrame]:
    """(TensorSet, kept rows) of the rows of `df` whose label is in `classes` (and that have a crop
    when the spec needs one)."""
    p = prepare(df, spec, classes, drop_unknown=True)
    return p.tensor_set(), p.df


def split_sets(df: pd.DataFrame, spec: InputSpec, classes: Sequence[str]) -> dict[str, tuple[TensorSet, pd.DataFrame]]:
    """{split: (TensorSet, rows)} for the non-empty splits of `df`."""
    p = prepare(df, spec, classes, drop_unknown=True)
    return {k: (v.tensor_set(), v.df) for k, v in split_prepared(p).items()}


def folder_table(path: str, limit: int = 500, seed: int = 0) -> pd.DataFrame:
    """Up to `limit` images (a seeded sample, all splits) of a class-per-folder dataset or zip."""
    df = import_image_folder(dataset_path(path), on_unknown="skip").table
    if len(df) > limit:
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    return df


def folder_prepared(df: pd.DataFrame, spec: InputSpec, classes: Sequence[str], frontal: bool = False) -> Prepared:
    """A folder dataset's model inputs (for `ferlib.training.evaluate.evaluate_prepared`), its large images'
    faces cut as `predict` cuts them; frontal: turned faces frontalised, for a model with a turned-face expert."""
    return prepare(df, spec, classes, drop_unknown=True, workers=1, framing="frontal" if frontal else None)
