"""Head-pose bins: the yaw and pitch edges (degrees) that Studio's coverage guide, the store's
per-sample bin and evaluation's per-pose accuracy share. Angles come from
`ferlib.faces.normalize.head_pose` (yaw > 0: the nose towards the image's right, pitch > 0: the face
tilts up). Bin labels read "<-30", "-30..-10", "-10..10", "10..30", ">30"."""
from __future__ import annotations

from typing import Sequence

import numpy as np

YAW_EDGES: tuple[float, ...] = (-30.0, -10.0, 10.0, 30.0)
PITCH_EDGES: tuple[float, ...] = (-20.0, -8.0, 8.0, 20.0)


def bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the pose bins defined by `edges` (len(edges)+1 labels, lowest first)."""
    e = [f"{v:g}" for v in edges]
    return [f"<{e[0]}"] + [f"{a}..{b}" for a, b in zip(e, e[1:])] + [f">{e[-1]}"]


def bin_label(value: float | None, edges: Sequence[float]) -> str:
    """The label of the bin `value` falls in ("unknown" for None or NaN)."""
    labels = bin_labels(edges)
    if value is None or not np.isfinite(value):
        return "unknown"
    return labels[int(np.searchsorted(np.asarray(edges), value, side="right"))]


def pose_bin(yaw: float | None, pitch: float | None) -> str:
    """The pose bin of a sample: ``"yaw <yaw bin>|pitch <pitch bin>"``."""
    return f"yaw {bin_label(yaw, YAW_EDGES)}|pitch {bin_label(pitch, PITCH_EDGES)}"


__all__ = ["PITCH_EDGES", "YAW_EDGES", "bin_label", "bin_labels", "pose_bin"]
