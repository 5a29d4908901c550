"""Overlay drawing of the Live and Studio pages (OpenCV, in place on BGR frames): face boxes, the
optional 478-point mesh, each face's label and a probability bar chart."""
from __future__ import annotations

import cv2
import numpy as np

from ferlib.types import Face, FrameResult


def _colour(label: str) -> tuple[int, int, int]:
    return {"happy": (60, 200, 60), "sad": (200, 120, 40), "angry": (40, 40, 220), "surprise": (0, 200, 230),
            "fear": (170, 60, 170), "disgust": (40, 140, 90), "neutral": (200, 200, 200),
            "contempt": (120, 120, 200)}.get(label, (255, 255, 255))


def draw_faces(bgr: np.ndarray, faces: list[Face], mesh: bool = False,
               colour: tuple[int, int, int] = (0, 200, 255)) -> np.ndarray:
    """Draw face boxes (and the 478-point mesh) on `bgr` in place; returns it."""
    for f in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, 2)
        if mesh and f.landmarks is not None:
            for x, y in f.landmarks[:, :2].astype(int):
                cv2.circle(bgr, (int(x), int(y)), 1, (0, 255, 0), -1)
    return bgr


def draw_result(bgr: np.ndarray, result: FrameResult, mesh: bool = False) -> np.ndarray:
    """Draw each face's box (or mesh), its label and a probability bar chart on `bgr` in place.
    Text and bars scale with the frame's height (sized for 360 px; never below 0.75 of that), on a
    dark backing so they stay readable on any background."""
    h, w = bgr.shape[:2]
    s = max(0.75, h / 360.0)
    font, thick = 0.6 * s, max(1, int(round(2 * s)))
    for p in result.predictions:
        label, colour = p.label, _colour(p.label)
        draw_faces(bgr, [p.face], mesh, colour)
        x0, y0, x1, _ = (int(round(v)) for v in p.face.box)
        text = f"{label} {float(np.max(p.probs)):.0%}" + (" (box)" if p.path == "box" else "")
        (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        # above the box, or just inside its top edge when that would cut the label off at the frame's top
        ty = y0 - 6 if y0 - 6 - th >= 2 else max(y0, 0) + th + 6
        cv2.putText(bgr, text, (x0, min(ty, h - base - 1)), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick,
                    cv2.LINE_AA)
        _draw_bars(bgr, p, x0, y0, x1, s)
    return bgr


def _draw_bars(bgr: np.ndarray, p, x0: int, y0: int, x1: int, s: float) -> None:
    """Per-class probability bars beside the face box (left of it when there is no room on the right)."""
    h, w = bgr.shape[:2]
    name_w, bar_w, row = int(62 * s), int(80 * s), int(17 * s)
    total = name_w + bar_w + 4
    bx = x1 + 6 if x1 + 6 + total < w else max(0, x0 - total - 6)
    rows = min(len(p.classes), max(0, (h - max(y0, 0)) // row))
    if rows == 0:
        return
    top = max(y0, 0)
    panel = bgr[top:top + rows * row, bx:bx + total]
    panel[:] = (panel * 0.35).astype(bgr.dtype)  # dark backing
    for k, (c, v) in enumerate(list(zip(p.classes, p.probs))[:rows]):
        y = top + k * row
        cv2.rectangle(bgr, (bx + name_w, y + 3), (bx + name_w + int(bar_w * float(v)), y + row - 3), _colour(c), -1)
        cv2.putText(bgr, c[:8], (bx + 2, y + row - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42 * s, (255, 255, 255),
                    1, cv2.LINE_AA)
