"""Pairwise distance features on normalised real landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from ferlib.errors import InputError
from ferlib.faces import normalize as N
from ferlib.faces.features import DISTANCE_POINTS, num_distances, pairwise_distances
from tests.helpers import FIXTURES


def test_distances_shape_values_and_order():
    faces = N.normalize(np.load(FIXTURES / "clip_landmarks.npy"))
    d = pairwise_distances(faces)
    assert len(DISTANCE_POINTS) == 32 and d.shape == (12, num_distances()) == (12, 496)
    assert d.dtype == np.float32 and (d > 0).all() and (d <= np.sqrt(3)).all()
    idx = (33, 263, 61)
    assert np.allclose(pairwise_distances(faces[0], idx),
                       [np.linalg.norm(faces[0, a] - faces[0, b]) for a, b in ((33, 263), (33, 61), (263, 61))])
    # smiling (frame 400) vs crying (frame 0): mouth-corner distance differs, features are not constant
    assert np.abs(d[10] - d[0]).max() > 0.02


@pytest.mark.parametrize("indices", [(1,), (1, 1, 2), (0, 478), ()])
def test_bad_indices_raise(indices):
    with pytest.raises(InputError):
        pairwise_distances(np.zeros((478, 3)), indices)


def test_bad_shape_raises():
    with pytest.raises(InputError):
        pairwise_distances(np.zeros((5, 3)))
