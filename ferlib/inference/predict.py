"""Batch prediction over images, folders and videos: one DataFrame schema for every model.

Columns, exactly: `source, frame, face, detected, label, p_<class>..., path` (model classes, lower
case; `path` says how the face reached the model: "mesh" = with its face-mesh landmarks, "box" = its
detector box alone, face mesh could not read it). One row per face per frame; a frame or image with
no face gives one row with detected=0, an empty label, empty probabilities and an empty path. Files
that cannot be read are reported, not fatal.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.errors import FerError, InputError
from ferlib.inference.pipeline import Pipeline
from ferlib.io import is_image, is_video, iter_video, load_image, prefetch
from ferlib.types import FrameResult

BASE_COLUMNS = ("source", "frame", "face", "detected", "label")
TRAILING_COLUMNS = ("path",)


def columns_for(classes) -> list[str]:
    return list(BASE_COLUMNS) + [f"p_{c.lower()}" for c in classes] + list(TRAILING_COLUMNS)


def result_rows(source: str, frame: int, result: FrameResult, classes) -> list[dict]:
    """Rows of the output schema for one frame's result."""
    if not result.predictions:
        row = {"source": source, "frame": frame, "face": -1, "detected": 0, "label": ""}
        row.update({f"p_{c.lower()}": np.nan for c in classes})
        row["path"] = ""
        return [row]
    rows = []
    for p in result.predictions:
        row = {"source": source, "frame": frame, "face": int(p.face.face_id), "detected": 1, "label": p.label}
        row.update({f"p_{c.lower()}": float(v) for c, v in zip(classes, p.probs)})
        row["path"] = p.path
        rows.append(row)
    return rows


def expand_inputs(inputs: Iterable) -> Iterator[Path]:
    """Files to predict on: images and videos as given, folders recursively (images and videos)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file() and (is_image(q) or is_video(q)))
        elif p.exists():
            yield p
        else:
            raise InputError(f"input {p}: no such file or folder")


@dataclass
class PredictReport:
    """What `predict` found: `table`, one row per face per image or video frame (`columns_for`), and
    the inputs it could not read (`errors`, one message each)."""

    table: pd.DataFrame
    errors: list[str] = field(default_factory=list)

    @property
    def frame(self) -> pd.DataFrame:
        """The old name of `table` (0.2.0), kept for callers written against it."""
        return self.table


def predict(inputs: Iterable, pipeline: Pipeline, max_frames: int | None = None,
            on_progress: Callable[[str, int], None] | None = None) -> PredictReport:
    """Predict every face in every image and video frame of `inputs`."""
    rows: list[dict] = []
    errors: list[str] = []
    for path in expand_inputs(inputs):
        src = str(path)
        pipeline.reset()
        try:
            if is_video(path):
                pipeline.extractor.mode = "video"
                # decoding, finding faces and classifying them overlap, one thread each (Pipeline.stream)
                with closing(pipeline.stream(prefetch(iter_video(path, max_frames=max_frames)))) as results:
                    for result in results:
                        rows += result_rows(src, result.frame_index, result, pipeline.classes)
                        if on_progress:
                            on_progress(src, result.frame_index)
            else:
                pipeline.extractor.mode = "static"
                rows += result_rows(src, 0, pipeline.process(load_image(path)), pipeline.classes)
                if on_progress:
                    on_progress(src, 0)
        except FerError as e:
            errors.append(str(e))
    df = pd.DataFrame(rows, columns=columns_for(pipeline.classes))
    return PredictReport(df.astype({"frame": int, "face": int, "detected": int}), errors)
