"""Load a keypoint_regressor checkpoint into the realigner that the face front end uses.

ferlib.faces.realign holds the geometry of the keypoint-aligned retry and takes the regressor as a
function; this is where a checkpoint becomes that function (the one place faces meet a model file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ferlib.errors import ModelFileError
from ferlib.faces.normalize import KEYPOINT_INDICES
from ferlib.faces.realign import KeypointRealigner
from ferlib.inference.checkpoint import load_checkpoint
from ferlib.inputs import InputSpec, build_batch


def load_realigner(path: str | Path) -> KeypointRealigner:
    """A KeypointRealigner over the keypoint_regressor checkpoint at `path` (ModelFileError if it is
    another kind of model or regresses other points)."""
    model, card = load_checkpoint(path)
    if model.task != "keypoints":
        raise ModelFileError(f"{path}: a {model.task} model, not a keypoint regressor")
    if list(card.get("keypoints", [])) != list(KEYPOINT_INDICES):
        raise ModelFileError(f"{path}: key points {card.get('keypoints')!r}, expected {list(KEYPOINT_INDICES)}")
    spec = InputSpec.from_dict(card["input"])
    model.eval()

    @torch.no_grad()
    def regress(grey: np.ndarray) -> np.ndarray:
        return model(build_batch(spec, crops=grey[None]))[0].numpy()

    return KeypointRealigner(regress, str(path))
