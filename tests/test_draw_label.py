"""The Live overlay's label stays readable when a face's box touches the frame's top (issue 15)."""
import numpy as np

from ferlib.classes import FER7
from ferlib.inference.draw import _overlap, draw_result, overlay_layout
from ferlib.types import Face, FrameResult, Prediction, main_prediction


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


def _five_faces(w: int = 640, h: int = 427) -> FrameResult:
    """Five faces side by side as in a group photo (the shared multi_face.jpg at 640 px), the middle one largest."""
    preds = []
    for k, (cx, size) in enumerate([(70, 90), (190, 95), (320, 120), (450, 95), (570, 90)]):
        probs = np.full(len(FER7), 0.02, np.float32)
        probs[k % len(FER7)] = 0.88
        box = (cx - size / 2, 140.0, cx + size / 2, 140.0 + size * 1.2)
        preds.append(Prediction(Face(landmarks=None, box=box, score=0.9), probs, FER7))
    return FrameResult(preds)


def _check_layout(result: FrameResult, shape) -> None:
    h, w = shape[:2]
    layout = overlay_layout(result, shape)
    boxes = {id(p): tuple(int(round(v)) for v in p.face.box) for p in result.predictions}
    rects = [lp.rect for lp in layout.labels]
    assert len(rects) == len(result.predictions)
    for lp in layout.labels:
        x0, y0, x1, y1 = lp.rect
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, lp.rect  # inside the frame
        for k, b in boxes.items():
            if k != id(lp.prediction):
                assert not _overlap(lp.rect, b), (lp.text, lp.rect, b)  # covers no other face
        assert not any(_overlap(lp.rect, r) for r in rects if r is not lp.rect)  # nor another label
        if layout.bars is not None:
            assert not _overlap(lp.rect, layout.bars)
        assert "(box)" not in lp.text and lp.text.endswith("%")
    assert layout.main is main_prediction(result.predictions)


def test_five_faces_each_get_one_label_that_covers_no_other_face():
    for shape in ((427, 640, 3), (800, 1280, 3)):
        h, w = shape[:2]
        res = _five_faces()
        if w != 640:  # the same group at 1280 x 800
            f = w / 640
            res = FrameResult([Prediction(Face(None, tuple(v * f for v in p.face.box), 0.9), p.probs, p.classes)
                               for p in res.predictions])
        _check_layout(res, shape)
    # the main face's bars, when drawn, cover no face (smaller, or not at all, in a crowded frame)
    for n in (5, 1):
        res = FrameResult(_five_faces().predictions[:n])
        bars = overlay_layout(res, (427, 640, 3)).bars
        assert bars is not None or n == 5
        boxes = [tuple(int(round(v)) for v in p.face.box) for p in res.predictions]
        assert bars is None or not any(_overlap(bars, b) for b in boxes)


def test_bars_only_for_the_main_face_where_they_fit():
    """Two faces on the left: the larger gets the one bar panel, clear of the other."""
    res = FrameResult([p for p in _five_faces().predictions if p.face.box[0] < 200])
    img = draw_result(np.full((427, 640, 3), 200, np.uint8), res)
    layout = overlay_layout(res, img.shape)
    assert layout.main is not None and layout.main.face.box[0] == 142.5  # the larger of the two
    assert layout.bars is not None
    _check_layout(res, img.shape)
    x0, y0, x1, y1 = layout.bars
    assert (img[y0:y1, x0 + 2:x1 - 2].max(axis=2) < 100).mean() > 0.5  # the dark backing of the one panel
    dark_cols = np.flatnonzero((img.max(axis=2) < 100).sum(axis=0) > 50)  # columns with a tall dark run
    assert dark_cols.min() >= x0 and dark_cols.max() < x1, (dark_cols.min(), dark_cols.max(), layout.bars)


def test_group_photo_through_the_pipeline_keeps_labels_clear(tmp_path):
    """The real group photo (../shared/media, local checks only) through the Live pipeline at 640 px."""
    from pathlib import Path

    import cv2
    import pytest

    from ferlib.inference.pipeline import Pipeline

    photo = Path(__file__).resolve().parents[2] / "shared" / "media" / "multi_face.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} is absent (../shared/media is only on the developers' and CI machines)")
    bgr = cv2.imread(str(photo))
    bgr = cv2.resize(bgr, (640, round(bgr.shape[0] * 640 / bgr.shape[1])))
    with Pipeline(mode="static") as pipe:
        result = pipe.process(bgr)
    assert len(result.predictions) == 5
    _check_layout(result, bgr.shape)
    out = draw_result(bgr.copy(), result)
    cv2.imwrite(str(tmp_path / "group.png"), out)
