"""`Dataset`: an importer's table of samples and what the importer knows about it.

The rule for every function of ferlib.data and its callers:

- A function that reads only rows takes a ``pd.DataFrame`` (``ds.table``) and gets any setting it
  needs as an explicit argument: the splits (`chunked_split`, `subject_split`, `split_counts`,
  `ensure_val_split`), `extract_landmarks` and `extract_crops` (``resize_to=ds.resize_to``),
  `detection_summary`, `split_prepared`.
- A function that needs what the importer knew beyond the rows (``resize_to``, ``root``, ``kind``)
  takes a `Dataset`: `prepare`, `landmarks_of`, `dataset_sha256`, `ferlib.training.workflow.TrainingData`.
  Each of them also takes a bare DataFrame, read as a Dataset without metadata (`Dataset.of`):
  Studio rows and `Prepared.df` subsets are such tables.

Pandas operations return plain tables; `Dataset.with_table` puts a new table under the same
metadata (a subset, a new split column).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd


@dataclass(frozen=True)
class Dataset:
    """Samples of one source (`ferlib.data.importers` columns) with the importer's metadata.

    kind: `import_dataset`'s kind ("fer2013", "folder", "studio", ...), None when not imported by it.
    root: the resolved path it was read from ("" when unknown). resize_to: the side readers bring
    every image to (AffectNet's mixed resolutions), None to read images as they are.
    skipped: unknown class folder -> images left out (``on_unknown="skip"``); FER+: "<split>: <reason>"
    -> images without a majority label. near_blank: sample paths the FER2013 archive lists as
    near-blank; excluded: the sample paths left out (near-blank FER2013 images, FER+ rows without a
    majority label).
    """

    table: pd.DataFrame
    kind: str | None = None
    root: str = ""
    resize_to: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    near_blank: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def with_table(self, table: pd.DataFrame) -> "Dataset":
        """A copy with `table` as its rows and the same metadata."""
        return replace(self, table=table)

    @classmethod
    def of(cls, data: "Dataset | pd.DataFrame") -> "Dataset":
        """`data` itself, or a bare DataFrame as a Dataset without metadata."""
        return data if isinstance(data, Dataset) else cls(table=data)


__all__ = ["Dataset"]
