"""Face crops: square crops of frames, and the FER2013-framed crop that image models see.

A face with landmarks is framed on its landmarks' bounding box. A face without them (face mesh
failed: a profile, a hand over the face, blur) is framed on its detector box, first turned into
the landmark box it stands for (BOX_TO_LANDMARKS), so both kinds of face give the same framing.
`frontal_crop` frames a face with landmarks the same way after turning it to face the camera
(ferlib.faces.frontalize). `model_crop(frontal=True)` uses it for faces turned FRONTAL_MIN_YAW or
more, and frames the others on their detector box.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from ferlib.errors import InputError
from ferlib.faces.detection import SMALL_SIDE
from ferlib.faces.frontalize import frontal_map, frontal_points
from ferlib.faces.normalize import head_pose
from ferlib.io import ensure_bgr
from ferlib.types import Face

FRONTAL_MIN_YAW = 20.0
"""`model_crop(frontal=True)`: faces whose yaw is at least this many degrees are frontalised; the others
are cropped on their detector box as they are. Measured with the default model (scripts/eval_crop_rules.py,
docs/results.md "Turned heads"): on AffectNet held-out faces under 10 degrees the plain detector-box crop
reads best (0.60; frontalised 0.57, landmark-framed 0.53), from 20 degrees the frontalised one (20-30:
0.50 against 0.47)."""
FER_CROP_MARGIN = 0.11
FER_CROP_SHIFT = -0.05
"""face_crop defaults, measured on FER2013 PublicTest: there the landmark box's longer side is a median
0.90 of the image side (margin 1/0.9 - 1) and its centre lies 0.05 of that side below the image centre."""
BOX_TO_LANDMARKS = (1.05, -0.03)
"""A BlazeFace box's longer side times BOX_TO_LANDMARKS[0] is the longer side of the face mesh's
bounding box, whose centre lies BOX_TO_LANDMARKS[1] of that side below (negative: above) the box's
centre. Medians over faces where both exist (`scripts/calibrate_box_crop.py`, 2026-11-27): the
committed clip 1.032 / -0.030 (48 faces), AffectNet + CK+ resized to 350 px 1.045 / -0.020 (794),
FER2013 PublicTest upscaled 1.069 / -0.046 (544)."""


def box_of(pts: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) bounding box of (N, >=2) points."""
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def square_crop(bgr: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, float, float]:
    """Square crop of `side` px centred on (cx, cy), padded with replicated borders where it leaves
    the frame. Returns (crop, x0, y0): crop pixel (u, v) is frame pixel (x0 + u, y0 + v)."""
    side = max(int(round(side)), 2)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    h, w = bgr.shape[:2]
    pl, pt = max(0, -x0), max(0, -y0)
    pr, pb = max(0, x0 + side - w), max(0, y0 + side - h)
    crop = bgr[max(0, y0):min(h, y0 + side), max(0, x0):min(w, x0 + side)]
    if pl or pt or pr or pb:
        crop = cv2.copyMakeBorder(crop, pt, pb, pl, pr, cv2.BORDER_REPLICATE)
    return crop, float(x0), float(y0)


def landmark_box(face: Face) -> tuple[float, float, float, float]:
    """The face's landmark bounding box, or the one its detector box stands for (BOX_TO_LANDMARKS)."""
    if face.landmarks is not None and len(face.landmarks):
        return box_of(np.asarray(face.landmarks))
    x0, y0, x1, y1 = face.box
    longer = max(x1 - x0, y1 - y0) * BOX_TO_LANDMARKS[0]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + BOX_TO_LANDMARKS[1] * longer
    return cx - longer / 2, cy - longer / 2, cx + longer / 2, cy + longer / 2


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (INTER_AREA when shrinking, cubic when enlarging)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def model_crop(bgr: np.ndarray, face: Face, size: int = 48, frontal: bool = False, on_box: bool = False) -> np.ndarray:
    """The grey crop a model sees: the whole image when its longer side is under SMALL_SIDE
    px (it is a face crop, e.g. FER2013: image models are trained on such images whole, by
    ferlib.data.cache.extract_crops), else `face_crop`. on_box: frame the face on its detector box
    (`face.box`), landmarks or not (an image-only model: `InputSpec.box_framed`); else on its landmarks
    where it has them. frontal: a `turned` face gets `frontal_crop` (framed with its detector box), and
    every other face is framed on its detector box."""
    bgr = ensure_bgr(bgr, name="frame")
    if max(bgr.shape[:2]) < SMALL_SIDE:
        return resize_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), size)
    return framed_crop(bgr, face, size, frontal=frontal, on_box=on_box)


def framed_crop(bgr: np.ndarray, face: Face, size: int = 48, frontal: bool = False, on_box: bool = False) -> np.ndarray:
    """`model_crop`'s grey face crop of a face in any image (no whole-image rule): frontalised when
    `frontal` and the face is `turned`, else framed on its detector box when `frontal` or `on_box`, else on
    its landmarks where it has them."""
    if frontal and face.landmarks is not None and turned(face):
        return frontal_crop(bgr, face.landmarks, size=size, grey=True, pose=face.pose, box=face.box)
    if frontal or on_box:
        face = replace(face, landmarks=None)
    return face_crop(bgr, face, size=size, grey=True)


def turned(face: Face) -> bool:
    """Whether `model_crop(frontal=True)` frontalises the face: it has landmarks and is turned at least
    FRONTAL_MIN_YAW degrees (its `pose`, else measured from the landmarks)."""
    if face.landmarks is None:
        return False
    yaw = face.pose[0] if face.pose is not None else head_pose(np.asarray(face.landmarks, np.float64))[0]
    return abs(yaw) >= FRONTAL_MIN_YAW


def _frame(box: tuple[float, float, float, float], margin: float) -> tuple[tuple[float, float], float]:
    """((cx, cy), side) of the square `face_crop` cuts for a landmark box."""
    x0, y0, x1, y1 = box
    longer = max(x1 - x0, y1 - y0)
    return ((x0 + x1) / 2, (y0 + y1) / 2 + FER_CROP_SHIFT * longer), (1 + margin) * longer


def face_crop(bgr: np.ndarray, face: Face, size: int = 48, grey: bool = True,
              margin: float = FER_CROP_MARGIN) -> np.ndarray:
    """Square face crop for image models, framed like FER2013 (tight face) and resized to size x size.

    Square of side (1 + margin) * the longer side of `landmark_box(face)`, its centre moved
    FER_CROP_SHIFT * that side down (negative: up). Returns uint8 (size, size) when grey, else
    (size, size, 3) BGR.
    """
    bgr = ensure_bgr(bgr, name="frame")
    if size < 1:
        raise InputError(f"face crop size must be >= 1, got {size}")
    (cx, cy), side = _frame(landmark_box(face), margin)
    if not side >= 1:
        raise InputError(f"face box {face.box} is empty")
    crop, _, _ = square_crop(bgr, cx, cy, side)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if grey else crop


def frontal_crop(bgr: np.ndarray, landmarks: np.ndarray, size: int = 48, grey: bool = True,
                 margin: float = FER_CROP_MARGIN, pose: tuple[float, float, float] | None = None,
                 box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The face of `landmarks` (478, 3 frame pixels) in `bgr`, frontalised (ferlib.faces.frontalize) and
    framed on the frontal points as `face_crop` frames a face on its landmarks: uint8 (size, size)
    when grey, else (size, size, 3) BGR. pose: the face's (yaw, pitch, roll) when known
    (`Face.pose`), else measured here. box: the face's detector box: the frame then moves and
    scales with the frontal points as the detector box's frame differs from the landmarks' one (so a
    face looking at the camera is framed exactly on its detector box)."""
    bgr = ensure_bgr(bgr, name="frame")
    if size < 1:
        raise InputError(f"face crop size must be >= 1, got {size}")
    pts = np.asarray(landmarks, dtype=np.float64)
    front, _ = frontal_points(pts, pose)
    (cx, cy), side = _frame(box_of(front), margin)
    if not side >= 1:
        raise InputError("the face's landmarks span no area")
    if box is not None:
        (lx, ly), l_side = _frame(box_of(pts), margin)
        (bx, by), b_side = _frame(landmark_box(Face(landmarks=None, box=box, score=0.0)), margin)
        cx, cy = cx + (bx - lx) * side / l_side, cy + (by - ly) * side / l_side
        side *= b_side / l_side
    ox, oy = cx - side / 2, cy - side / 2
    map_x, map_y = frontal_map(pts, front, (ox, oy), side, size)
    # cut the region the map reads, shrunk so that the remap samples about one pixel per output pixel
    lo = np.array([map_x.min(), map_y.min()]) - 2
    hi = np.array([map_x.max(), map_y.max()]) + 2
    (cx, cy), region_side = (lo + hi) / 2, float(max(hi - lo))
    region, rx, ry = square_crop(bgr, float(cx), float(cy), region_side)
    n0 = region.shape[0]
    # shrink the region to the crop's resolution first (INTER_AREA, as face_crop), then remap
    shrink = min(1.0, size / side)
    if shrink < 1.0:
        region = cv2.resize(region, (max(1, round(region.shape[1] * shrink)), max(1, round(region.shape[0] * shrink))),
                            interpolation=cv2.INTER_AREA)
    if grey:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    k = region.shape[0] / n0
    mx = ((map_x - rx) * k - 0.5).astype(np.float32)
    my = ((map_y - ry) * k - 0.5).astype(np.float32)
    return cv2.remap(region, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
