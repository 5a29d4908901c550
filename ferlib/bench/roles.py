"""The models a run times (the shipped checkpoint of each role, else an untrained one), their
runners per backend and thread count, and model inputs built from the clip's real faces."""
from __future__ import annotations

import numpy as np
import torch

from ferlib.bench.config import BACKENDS, ROLES
from ferlib.classes import FER7
from ferlib.errors import InputError
from ferlib.faces.crops import face_crop
from ferlib.inference.checkpoint import MODELS_DIR, existing_checkpoint, load_checkpoint, make_card
from ferlib.inference.runtime import Runner, load_runner
from ferlib.inputs import build_batch, spec_for_model
from ferlib.models import create_model
from ferlib.types import Face, largest_face


def load_role(role: str):
    """(model, card, source) of a benchmark role: the shipped checkpoint, or an untrained model."""
    stem, arch = ROLES[role]
    c = existing_checkpoint(MODELS_DIR / stem)
    if c is not None:
        model, card = load_checkpoint(c)
        return model, card, f"models/{stem} (trained)"
    model = create_model(arch).eval()
    card = make_card(model, FER7, spec_for_model(model))
    card["name"] = f"{arch} (untrained)"
    return model, card, f"untrained {arch} (models/{stem} absent; timing does not depend on weights)"


class Runners:
    """ferlib.inference.runtime runners per (role, backend, threads), made once each by `load_runner`
    (exports are parity-checked against PyTorch by ferlib.inference.export)."""

    def __init__(self, roles: dict):
        self.roles = roles
        self._made: dict[tuple, Runner] = {}

    def __call__(self, role: str, backend: str, threads: int) -> Runner:
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; known: {BACKENDS}")
        key = (role, backend, threads)
        if key not in self._made:
            model, card, _ = self.roles[role]
            self._made[key] = load_runner((model, card), backend=backend, threads=threads)
        return self._made[key]


def clip_faces(frames, ex):
    """Largest face of each frame: (landmarks (N, 478, 3), frame index (N,), timestamps ms (N,))."""
    lm, idx, ts = [], [], []
    ex.reset()
    for i, t, bgr in frames:
        f = largest_face(ex.process(bgr, t))
        if f is not None:
            lm.append(f.landmarks)
            idx.append(i)
            ts.append(t)
    if not lm:
        raise InputError("no face found in the benchmark clip")
    return np.stack(lm), np.array(idx), np.array(ts)


def prepared(spec, frames, lm, idx, n: int) -> dict[str, torch.Tensor]:
    """Model inputs for `n` real faces (cycled when the clip has fewer)."""
    pick = np.arange(n) % len(lm)
    crops = None
    if spec.needs_crops:
        crops = np.stack([face_crop(frames[idx[j]][2], Face(lm[j], (0, 0, 1, 1), 1.0), size=spec.image_size)
                          for j in pick])
    return build_batch(spec, landmarks_px=lm[pick] if spec.needs_landmarks else None, crops=crops)
