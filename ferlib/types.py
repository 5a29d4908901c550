"""Plain data types shared by every part of ferlib (extractor, models, pipeline, store, app)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ferlib.errors import InputError

NUM_LANDMARKS = 478
"""Points of a face mesh face (468 + 10 iris points)."""


def face_landmarks(points, what: str = "landmarks") -> np.ndarray:
    """`points` as float32 (478, 3) face landmarks; InputError naming `what` when the shape is not
    (478, 3) or a value is not finite."""
    a = np.asarray(points, dtype=np.float32)
    if a.shape != (NUM_LANDMARKS, 3) or not np.isfinite(a).all():
        raise InputError(f"{what} must be a finite (478, 3) array of landmarks, got shape {a.shape}")
    return a


@dataclass
class Face:
    """One detected face in one frame.

    landmarks: float32 (478, 3) in *pixel* coordinates of the frame the face was found in
    (x right, y down, z in the same pixel scale as x, as MediaPipe's face mesh gives it times the
    image width), or None where face mesh could not read a face a detector found.
    box: (x0, y0, x1, y1) in pixels, clipped to the frame. score: detection confidence in [0, 1].
    face_id: stable id across frames of one video stream (0, 1, ...); for still images the index of
    the face in the image, left to right.
    pose: (yaw, pitch, roll) in degrees, or None when not computed.
    """

    landmarks: np.ndarray | None
    box: tuple[float, float, float, float]
    score: float
    face_id: int = 0
    pose: tuple[float, float, float] | None = None

    @property
    def path(self) -> str:
        """How the face was prepared for a model: "mesh" (it has landmarks) or "box" (detector box only)."""
        return "box" if self.landmarks is None else "mesh"

    @property
    def area(self) -> float:
        """The box's area in square pixels."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


@dataclass
class Prediction:
    """A model's output for one face: probabilities over `classes` (same order). model: the name of
    the model that produced them (a landmark model's image fallback classifies faces without landmarks).
    path: the face's `Face.path` when the model read it (default: now); landmarks added afterwards (the
    Live page's face-mesh overlay) do not change it."""

    face: Face
    probs: np.ndarray
    classes: tuple[str, ...]
    model: str = ""
    path: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            self.path = self.face.path

    @property
    def label(self) -> str:
        return self.classes[int(np.argmax(self.probs))]


@dataclass
class FrameResult:
    """Everything the pipeline knows about one frame; an empty `predictions` list means no face."""

    predictions: list[Prediction] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    frame_index: int = 0


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box (the first of equal ones), or None when there is none: the face
    a recording keeps, a dataset image is labelled by, and Live reports."""
    return max(faces, key=lambda f: f.area) if len(faces) else None


def main_prediction(predictions: Sequence[Prediction]) -> Prediction | None:
    """The prediction of the largest face (`largest_face`), or None when there is none."""
    return max(predictions, key=lambda p: p.face.area) if len(predictions) else None
