"""The Live overlay's label stays readable when a face's box touches the frame's top (issue 15)."""
import numpy as np

from ferlib.classes import FER7
from ferlib.draw import draw_result
from ferlib.types import Face, FrameResult, Prediction


def _frame_with_box(y0: float) -> np.ndarray:
    probs = np.full(len(FER7), 0.02, np.float32)
    probs[FER7.index("happy")] = 0.88
    face = Face(landmarks=None, box=(100.0, y0, 300.0, y0 + 200.0), score=0.9)
    out = np.zeros((360, 640, 3), np.uint8)
    return draw_result(out, FrameResult([Prediction(face, probs, FER7)]))


def _label_rows(img: np.ndarray, x0: int = 100) -> np.ndarray:
    """Rows holding label pixels: the columns right of the box's left edge, left of the bars."""
    band = img[:, x0 + 4: x0 + 90].any(axis=2)
    return np.flatnonzero(band.any(axis=1))


def test_label_above_the_box_when_there_is_room():
    rows = _label_rows(_frame_with_box(120.0))
    above = rows[rows < 118]
    assert len(above) > 5 and above.min() > 90  # the label sits just above the box


def test_label_moves_inside_the_box_at_the_frame_top():
    for y0 in (0.0, 4.0, -30.0):
        img = _frame_with_box(y0)
        top_edge = max(int(y0), 0) + 2  # the box's own 2-px line
        rows = _label_rows(img)
        text = rows[rows > top_edge]
        assert len(text) > 5, y0
        # whole glyphs, clear of the box's top line and of the frame's edge
        assert text.min() >= top_edge + 3, (y0, text.min())


def test_probability_bars_scale_with_the_frame_and_stay_inside_it():
    probs = np.full(len(FER7), 0.02, np.float32)
    probs[FER7.index("happy")] = 0.88
    heights = {}
    for h, w in ((360, 640), (720, 1280)):
        face = Face(landmarks=None, box=(w * 0.2, h * 0.2, w * 0.45, h * 0.65), score=0.9)
        img = draw_result(np.full((h, w, 3), 200, np.uint8), FrameResult([Prediction(face, probs, FER7)]))
        right = img[:, int(w * 0.45) + 8:]  # the bar panel right of the box: darkened backing
        dark = np.flatnonzero((right.max(axis=2) < 100).any(axis=1))
        assert len(dark), (h, w)
        heights[h] = dark.max() - dark.min()
    assert heights[720] >= 1.8 * heights[360] >= 1.8 * 7 * 12  # one readable row per class, twice as tall at 720p
