"""The shared helpers of ferlib.types and ferlib.fsutil: one definition each."""
import json

import numpy as np
import pytest
import torch

from ferlib.errors import InputError
from ferlib.fsutil import json_default, sha256_bytes, sha256_file, sha256_files
from ferlib.inference.checkpoint import existing_checkpoint
from ferlib.types import Face, Prediction, face_landmarks, largest_face, main_prediction


def _face(box):
    return Face(landmarks=None, box=box, score=1.0)


def test_largest_face_and_main_prediction():
    small, big, big2 = _face((0, 0, 10, 10)), _face((5, 5, 45, 25)), _face((0, 0, 40, 20))
    assert largest_face([small, big, big2]) is big  # the first of equal areas
    assert largest_face([]) is None
    preds = [Prediction(f, np.ones(2) / 2, ("a", "b")) for f in (small, big)]
    assert main_prediction(preds) is preds[1] and main_prediction([]) is None


def test_face_landmarks():
    pts = np.ones((478, 3), np.float64)
    out = face_landmarks(pts)
    assert out.dtype == np.float32 and out.shape == (478, 3)
    pts[3, 1] = np.nan
    with pytest.raises(InputError, match="baseline must be a finite"):
        face_landmarks(pts, "baseline")
    with pytest.raises(InputError, match=r"got shape \(468, 3\)"):
        face_landmarks(np.zeros((468, 3)))


def test_json_default():
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": torch.tensor([1.0, 2.0]), "d": np.int64(4)}
    assert json.loads(json.dumps(obj, default=json_default)) == {"a": 0.5, "b": [0, 1, 2], "c": [1.0, 2.0], "d": 4}
    with pytest.raises(TypeError):
        json.dumps({"x": object()}, default=json_default)


def test_hashes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"abc")
    assert sha256_file(tmp_path / "d" / "x.bin") == sha256_bytes(b"abc")
    whole = sha256_files([tmp_path / "d" / "x.bin"], tmp_path)
    assert whole == sha256_bytes(f"d/x.bin\0{sha256_bytes(b'abc')}\n".encode())


def test_existing_checkpoint(tmp_path):
    (tmp_path / "m.json").write_text("{}")
    assert existing_checkpoint(tmp_path / "m") is None
    (tmp_path / "m.safetensors").write_bytes(b"")
    assert existing_checkpoint(tmp_path / "m.safetensors") == tmp_path / "m.json"
