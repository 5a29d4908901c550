"""Helpers the test modules share: paths of the fixtures, the ../shared datasets, small synthetic tasks.

Import them as ``from tests.helpers import ...`` (the tests run from the repository root:
``.venv/bin/python -m pytest``); pytest fixtures stay in conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ferlib.faces.normalize import SUBSETS, canonical_face
from ferlib.inputs import InputSpec, TensorSet

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE_CLIP = FIXTURES / "WolfgangLanger_Pexels.mp4"
SHARED = Path(os.environ.get("FERLIB_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_file(name: str) -> Path:
    """Path of a dataset under ../shared/data, or skip the test with a clear reason."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"dataset {p} is absent (../shared/data is only on the developers' and CI machines)")
    return p


def faces_px(n: int, seed: int = 0) -> np.ndarray:
    """n slightly perturbed canonical faces in pixel coordinates (asymmetric on purpose)."""
    rng = np.random.default_rng(seed)
    base = canonical_face() * 80 + np.array([200, 220, 0])
    return (base[None] + rng.normal(0, 2.0, (n, 478, 3))).astype(np.float32)


def landmark_task(n: int, seed: int = 0) -> TensorSet:
    """3 classes told apart by the mean height of the lip points (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    lm = torch.rand(n, 3, 102, generator=g) * 0.5
    lip_cols = [i for i, v in enumerate(SUBSETS["default"]) if v in set(SUBSETS["lips"])]
    lm[:, 1, lip_cols] += 0.4 * y[:, None].float()
    return TensorSet({"landmarks": lm}, y, InputSpec(kind="landmarks"))


def image_task(n: int, seed: int = 0, size: int = 32, box=None) -> TensorSet:
    """3 classes told apart by which third of a box (y0, y1, x0, x1; default: the whole image) is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    img = torch.randn(n, 1, size, size, generator=g) * 0.5
    y0, y1, x0, x1 = box or (0, size, 0, size)
    w = (x1 - x0) // 3
    for c in range(3):
        img[y == c, :, y0:y1, x0 + w * c:x0 + w * (c + 1)] += 1.5
    return TensorSet({"image": img}, y, InputSpec(kind="image", image_size=size))
