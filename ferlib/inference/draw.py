"""Overlay drawing of the Live and Studio pages (OpenCV, in place on BGR frames): face boxes, the
optional 478-point mesh, one compact label per face ("happy 88%") placed where it covers no other
face, and the probability bars of the main face (the largest) only, where they cover no other face.

`overlay_layout` computes where everything goes (pure geometry, tested for overlaps); `draw_result`
draws it. With five people in the frame every face keeps a readable label and no panel covers a
neighbour: the per-class bars of every face used to overlap each other and the faces beside them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ferlib.types import Face, FrameResult, Prediction, main_prediction

Rect = tuple[int, int, int, int]
"""x0, y0, x1, y1 in pixels (x1, y1 exclusive)."""


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


@dataclass(frozen=True)
class LabelPlace:
    """Where one face's label goes: its text, the backing rectangle and the text's baseline origin."""

    prediction: Prediction
    text: str
    rect: Rect
    origin: tuple[int, int]
    font: float
    thick: int


@dataclass(frozen=True)
class Layout:
    """Everything an overlay draws besides the boxes: a label per face and the main face's bar panel."""

    scale: float
    labels: list[LabelPlace]
    main: Prediction | None
    bars: Rect | None
    bars_scale: float


def _scale(h: int) -> float:
    return max(0.75, h / 360.0)


def _font(s: float) -> tuple[float, int]:
    return 0.6 * s, max(1, int(round(2 * s)))


def _box(p: Prediction) -> Rect:
    x0, y0, x1, y1 = (int(round(v)) for v in p.face.box)
    return x0, y0, x1, y1


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(r: Rect, w: int, h: int) -> bool:
    return r[0] >= 0 and r[1] >= 0 and r[2] <= w and r[3] <= h


def _clamp(r: Rect, w: int, h: int) -> Rect:
    """`r` shifted (not resized) to lie inside the frame as far as it fits."""
    x0, y0, x1, y1 = r
    dx = -x0 if x0 < 0 else min(0, w - x1)
    dy = -y0 if y0 < 0 else min(0, h - y1)
    return x0 + dx, y0 + dy, x1 + dx, y1 + dy


def _clamp_x(r: Rect, w: int) -> Rect:
    """`r` shifted sideways into the frame's width as far as it fits (a label above a box stays above it)."""
    dx = -r[0] if r[0] < 0 else min(0, w - r[2])
    return r[0] + dx, r[1], r[2] + dx, r[3]


def label_text(p: Prediction) -> str:
    """A face's compact label: the emotion and its probability (the path is in the page's face table)."""
    return f"{p.label} {float(np.max(p.probs)):.0%}"


def _bar_panel(p: Prediction, w: int, h: int, s: float, avoid: list[Rect]) -> tuple[Rect, float] | None:
    """(rect, scale) of the main face's bar panel: right of its box, else left of it (at the box's top, or as
    far up as the frame lets it), else below it, at full size, then smaller (LABEL_SHRINK); None when no spot
    is clear of every face (a crowded frame: the page's chart shows the main face's probabilities)."""
    x0, y0, x1, y1 = _box(p)
    for shrink in LABEL_SHRINK:
        bs = s * shrink
        total, tall = int(62 * bs) + int(80 * bs) + 4, len(p.classes) * int(17 * bs)
        top = min(max(y0, 0), max(h - tall, 0))
        for r in ((x1 + 6, top, x1 + 6 + total, top + tall), (x0 - total - 6, top, x0 - 6, top + tall),
                  _clamp_x((x0, y1 + 6, x0 + total, y1 + 6 + tall), w)):
            if _inside(r, w, h) and not any(_overlap(r, o) for o in avoid):
                return r, bs
    return None


def overlay_layout(result: FrameResult, shape: tuple[int, ...], main: Prediction | None = None) -> Layout:
    """Where `draw_result` puts each face's label and the main face's bars on a frame of `shape` (h, w, ...).

    Each label is tried above its box, below it, inside its top edge, then inside its bottom edge, each
    left-aligned, centred and right-aligned with the box and shifted sideways into the frame, at full
    size and then smaller (LABEL_SHRINK); the first spot that stays inside the frame and covers no other
    face's box, no label placed before it and not the bar panel wins (the largest faces are placed
    first); when none is clear, the smallest label inside its own box's top edge. `main`: the face whose
    bars are drawn (default the largest, `types.main_prediction`)."""
    h, w = int(shape[0]), int(shape[1])
    s = _scale(h)
    preds = list(result.predictions)
    main = main if main is not None else main_prediction(preds)
    boxes = {id(p): _box(p) for p in preds}
    panel = None if main is None else _bar_panel(main, w, h, s, list(boxes.values()))
    bars, bars_scale = (None, s) if panel is None else panel
    placed: list[LabelPlace] = []
    for p in sorted(preds, key=lambda q: -q.face.area):
        others = [b for k, b in boxes.items() if k != id(p)] + [lp.rect for lp in placed]
        if bars is not None:
            others.append(bars)
        placed.append(_place_label(p, boxes[id(p)], others, w, h, s))
    return Layout(s, placed, main, bars, bars_scale)


LABEL_SHRINK = (1.0, 0.8, 0.65)
"""Font sizes a label tries, as a share of the frame's label size, before it settles inside its own box."""


def _place_label(p: Prediction, box: Rect, others: list[Rect], w: int, h: int, s: float) -> LabelPlace:
    """The first clear spot for `p`'s label (see `overlay_layout`): above, below, inside the top or bottom
    edge of its box; left-aligned, centred or right-aligned with it; at full size, then smaller."""
    text = label_text(p)
    x0, y0, x1, y1 = box
    for shrink in LABEL_SHRINK:
        font, thick = _font(s * shrink)
        pad = max(2, int(round(3 * s * shrink)))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        lw, lh = tw + 2 * pad, th + base + 2 * pad
        ys = (y0 - 4 - lh, y1 + 4, y0 + 3, y1 - 3 - lh)
        xs = (x0, (x0 + x1 - lw) // 2, x1 - lw)
        spots = [_clamp_x((x, y, x + lw, y + lh), w) for y in ys for x in xs]
        rect = next((r for r in spots if _inside(r, w, h) and not any(_overlap(r, o) for o in others)), None)
        if rect is not None:
            return LabelPlace(p, text, rect, (rect[0] + pad, rect[3] - pad - base), font, thick)
    # nothing clear: the smallest size (the loop's last) inside its own box's top edge
    r = _clamp((x0 + 3, y0 + 3, x0 + 3 + lw, y0 + 3 + lh), w, h)
    return LabelPlace(p, text, r, (r[0] + pad, r[3] - pad - base), font, thick)


def draw_result(bgr: np.ndarray, result: FrameResult, mesh: bool = False, main: Prediction | None = None) -> np.ndarray:
    """Draw each face's box (or mesh) and compact label, and the main face's probability bars, on `bgr` in
    place (`overlay_layout` says where). Text and bars scale with the frame's height (sized for 360 px;
    never below 0.75 of that), on a dark backing so they stay readable on any background."""
    layout = overlay_layout(result, bgr.shape, main)
    for p in result.predictions:
        draw_faces(bgr, [p.face], mesh, _colour(p.label))
    for lp in layout.labels:
        x0, y0, x1, y1 = lp.rect
        region = bgr[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
        region[:] = (region * 0.35).astype(bgr.dtype)  # dark backing
        cv2.putText(bgr, lp.text, lp.origin, cv2.FONT_HERSHEY_SIMPLEX, lp.font, _colour(lp.prediction.label),
                    lp.thick, cv2.LINE_AA)
    if layout.main is not None and layout.bars is not None:
        _draw_bars(bgr, layout.main, layout.bars, layout.bars_scale)
    return bgr


def _draw_bars(bgr: np.ndarray, p: Prediction, rect: Rect, s: float) -> None:
    """Per-class probability bars of one face in `rect` (its `overlay_layout` panel)."""
    name_w, bar_w, row = int(62 * s), int(80 * s), int(17 * s)
    bx, top, x1, y1 = rect
    rows = (y1 - top) // row
    panel = bgr[top:y1, bx:x1]
    panel[:] = (panel * 0.35).astype(bgr.dtype)  # dark backing
    for k, (c, v) in enumerate(list(zip(p.classes, p.probs))[:rows]):
        y = top + k * row
        cv2.rectangle(bgr, (bx + name_w, y + 3), (bx + name_w + int(bar_w * float(v)), y + row - 3), _colour(c), -1)
        cv2.putText(bgr, c[:8], (bx + 2, y + row - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42 * s, (255, 255, 255),
                    1, cv2.LINE_AA)
