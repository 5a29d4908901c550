"""Pairwise distance features between chosen landmarks, computed on normalised points."""
from __future__ import annotations

import numpy as np

from ferlib.errors import InputError
from ferlib.faces.normalize import NUM_LANDMARKS, _check

DISTANCE_POINTS: tuple[int, ...] = (
    70, 105, 107, 300, 334, 336,            # eyebrows: outer, middle, inner (right, left)
    33, 133, 159, 145, 263, 362, 386, 374,  # eyes: outer/inner corners, upper/lower lid (right, left)
    468, 473,                               # iris centres
    1, 98, 327,                             # nose tip, nostril wings
    61, 291, 0, 17, 13, 14, 37, 267, 84, 314,  # mouth: corners, outer/inner lip midpoints, lip sides
    152, 205, 425,                          # chin, cheeks
)
"""Default 32 expressive landmarks -> 496 pairwise distances."""


def num_distances(k: int = len(DISTANCE_POINTS)) -> int:
    """Number of features for k points: k (k - 1) / 2."""
    return k * (k - 1) // 2


def pairwise_distances(points_norm, indices=DISTANCE_POINTS) -> np.ndarray:
    """Euclidean (3-D) distances between every pair of `indices` of normalised landmarks.

    points_norm: (478, 3) or (N, 478, 3), e.g. from normalize.normalize(). Returns float32
    (K(K-1)/2,) or (N, K(K-1)/2), pairs in np.triu_indices(K, 1) order (i < j by position in indices).
    """
    p, single = _check(points_norm)
    p = p.astype(np.float32)
    idx = np.asarray(indices, dtype=np.int64)
    if (idx.ndim != 1 or len(idx) < 2 or idx.min() < 0 or idx.max() >= NUM_LANDMARKS
            or len(set(idx.tolist())) != len(idx)):
        raise InputError(f"distance indices must be >= 2 distinct values in [0, 477], got {list(indices)[:10]}...")
    sel = p[:, idx]
    i, j = np.triu_indices(len(idx), 1)
    out = np.linalg.norm(sel[:, i] - sel[:, j], axis=2).astype(np.float32)
    return out[0] if single else out
