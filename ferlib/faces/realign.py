"""Keypoint-guided retry where face mesh fails: the third source design's first stage.

A `keypoint_regressor` checkpoint (scripts/train_keypoints.py: a small CNN trained on face mesh's
own eye centres and lip corners) predicts the four key points on a face crop face mesh could not
read (low resolution, tilted, off-centre). A similarity transform then puts them where they sit on
an average FER2013 face (TEMPLATE), upright and centred, in a small square that goes through the
extractor's small-image path once more, turned by RETRY_ANGLES in turn until a face is found whose
key points agree with the regressor's. The points are mapped back to the input's pixels.
`LandmarkExtractor(realigner=...)` calls this for a detector box whose mesh failed, and for a
small image (a face crop) when every other path found nothing. This module holds the geometry only;
the regressor comes in as a function (`ferlib.inference.keypoints.load_realigner` loads a
checkpoint into one), so finding faces never loads a model file. The gain on FER2013 is measured in
docs/models.md (`scripts/eval_realign.py`).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ferlib.errors import InputError
from ferlib.faces.normalize import KEYPOINT_INDICES

# Where the key points (KEYPOINT_INDICES order: right eye, left eye, mouth right, mouth left, the
# subject's sides) lie on a FER2013 face crop, as fractions of its side: the mean of face mesh's
# points over the 27,203 Training images where it found a face, made left/right symmetric.
TEMPLATE = np.array([[0.32, 0.38], [0.68, 0.38], [0.36, 0.76], [0.64, 0.76]], dtype=np.float64)
MAX_SIDE = 127  # the aligned crop keeps the input's side up to this: below the extractor's SMALL_SIDE,
# so it takes the small-image path (upscale, pad, short-range BlazeFace, mesh)
TEMPLATE_SCALE = 0.9  # TEMPLATE shrunk about the centre by this (chosen on PublicTest: scripts/eval_realign.py)
RETRY_ANGLES = (0.0, -10.0, 10.0)  # turns of the aligned crop tried in order (degrees)
# A face mesh finds in the aligned crop counts only if its key points lie within this many
# inter-ocular distances (mean) of where the regressor put them: face mesh sometimes "finds" a face
# in noise, and then rarely where the regressor expects one.
MAX_DISAGREEMENT = 0.5


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking src (P, 2) onto dst."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum()
    if not np.isfinite(var) or var < 1e-9:
        raise InputError("key points collapse onto one point; no transform")
    a = (s * d).sum() / var  # s-cos term
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var  # s-sin term
    r = np.array([[a, -b], [b, a]])
    return np.c_[r, md - r @ ms]


# A keypoint regressor as the realigner sees it: a square grey uint8 face crop (S, S) -> (4, 2) points
# (KEYPOINT_INDICES order) as fractions of the side, x then y.
Regressor = Callable[[np.ndarray], np.ndarray]


class KeypointRealigner:
    """`keypoints(bgr)` and `retry(bgr, find)` around a keypoint regressor; `source` names it (the
    checkpoint it came from: the extractor's `keypoint_model` and the landmark cache's key)."""

    def __init__(self, regress: Regressor, source: str = ""):
        self.regress, self.source = regress, str(source)

    def keypoints(self, bgr: np.ndarray) -> np.ndarray:
        """(4, 2) key points in `bgr`'s pixels, the whole image taken as the face crop."""
        h, w = bgr.shape[:2]
        side = max(h, w)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
        if h != w:  # square it, the face centred, edges replicated
            grey = cv2.copyMakeBorder(grey, (side - h) // 2, side - h - (side - h) // 2, (side - w) // 2,
                                      side - w - (side - w) // 2, cv2.BORDER_REPLICATE)
        out = np.asarray(self.regress(grey), np.float64).reshape(len(KEYPOINT_INDICES), 2)
        return out * side - [(side - w) // 2, (side - h) // 2]

    def retry(self, bgr: np.ndarray, find: Callable[[np.ndarray], np.ndarray | None],
              angles=RETRY_ANGLES, scale: float = TEMPLATE_SCALE, use_keypoints: bool = True) -> np.ndarray | None:
        """Face mesh points (478, 3) in `bgr`'s pixels, or None.

        `bgr` is taken as a face crop; its key points are moved onto TEMPLATE (shrunk about the
        centre by `scale`) in a square of the crop's side (at most MAX_SIDE), which is then turned
        by each of `angles` (degrees) in turn until `find` (a small image -> points in its pixels,
        or None) sees a face whose key points agree with the template's (MAX_DISAGREEMENT).
        use_keypoints=False: the crop's own framing stands in for the key points (the control: the
        same retries without the regressor)."""
        h, w = bgr.shape[:2]
        side = int(min(max(h, w), MAX_SIDE))
        try:
            kps = self.keypoints(bgr) if use_keypoints else TEMPLATE * [w, h]
            tpl = ((TEMPLATE - 0.5) * scale + 0.5) * side
            m = np.r_[similarity_matrix(kps, tpl), [[0, 0, 1]]]
        except InputError:
            return None
        c = side / 2
        for a in angles:
            turn = cv2.getRotationMatrix2D((c, c), float(a), 1.0)
            full = np.r_[turn, [[0, 0, 1]]] @ m  # input -> turned crop
            img = cv2.warpAffine(bgr, full[:2], (side, side), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REPLICATE)
            pts = find(img)
            if pts is not None:
                want = tpl @ turn[:, :2].T + turn[:, 2]  # the template's points in the turned crop
                got = pts[list(KEYPOINT_INDICES.values()), :2]
                iod = np.linalg.norm(tpl[0] - tpl[1])
                if np.linalg.norm(got - want, axis=1).mean() / iod > MAX_DISAGREEMENT:
                    continue
                inv = cv2.invertAffineTransform(full[:2])
                out = pts.astype(np.float64).copy()
                out[:, :2] = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
                out[:, 2] = pts[:, 2] * np.sqrt(abs(np.linalg.det(inv[:, :2])))
                return out
        return None
