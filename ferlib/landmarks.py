"""Face landmarks: full-range BlazeFace finds the faces (short-range on upscaled small images),
MediaPipe's face mesh (refined, 478 points) runs on a square crop of each, and the points are
mapped back to frame pixels. Video mode tracks the faces with a full-frame tracking face mesh
between detector passes (docs/landmarks.md).

An extractor owns its MediaPipe graphs and is NOT thread-safe: use one per stream/thread.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ferlib.errors import FerError, InputError  # noqa: E402
from ferlib.io import ensure_bgr  # noqa: E402
from ferlib.normalize import head_pose  # noqa: E402
from ferlib.types import Face  # noqa: E402

CROP_MARGIN = 0.6
"""Square mesh crop side = (1 + CROP_MARGIN) * the longer side of the BlazeFace box."""
MESH_INPUT = 256
"""Side in pixels that every crop is resized to before meshing."""
SMALL_SIDE = 128
"""Images whose longer side is below this are upscaled and padded before detection (FER2013 is 48)."""
SMALL_UPSCALE = 192
SMALL_PAD = 0.25
"""Small images: upscale the longer side to SMALL_UPSCALE px, then pad SMALL_PAD of that on each side
with black (on 400 FER2013 PrivateTest images: 95% found, against 89% with a replicated border)."""
FER_CROP_MARGIN = 0.11
FER_CROP_SHIFT = -0.05
"""face_crop defaults, measured on FER2013 PublicTest: there the landmark box's longer side is a median
0.90 of the image side (margin 1/0.9 - 1) and its centre lies 0.05 of that side below the image centre."""
TRACK_IOU = 0.3
TRACK_MAX_MISSES = 10


def _quiet_mediapipe() -> None:
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with mediapipe
        pass


_STDERR_LOCK = threading.Lock()


@contextmanager
def _native_stderr_silenced():
    """Mute fd 2 while MediaPipe's C++ graphs start: their TFLite/absl start-up warnings ignore
    GLOG_minloglevel. Python exceptions are unaffected (they are raised, not printed)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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


class LandmarkExtractor:
    """478-point face landmarks of every face in a frame.

    mode "video": stable `face_id`s across consecutive frames (IoU matching with the previous
    frame's boxes); "static": ids are the faces' left-to-right order, each face crop meshed with a
    static face mesh. Video mode with `tracking=True` (and the detector on, frames >= SMALL_SIDE):
    a tracking face mesh on the full frame follows the faces; BlazeFace + per-crop meshing run only
    on the first frame (after a reset, a frame size change or a timestamp going backwards), when the
    tracker returns fewer faces than the last detector pass kept or a face no detector pass
    confirmed, and every `redetect_every` frames (new faces). Tracked faces keep the score of their
    last matching detection, their box is the landmarks' bounding box. `tracking=False`: the
    detector + per-crop mesh on every frame.
    Faces whose detector score is below `min_face_score` are dropped. Small images (< SMALL_SIDE px)
    are upscaled and padded and searched with the short-range BlazeFace (it finds 96% of padded
    FER2013 faces, the full-range one 39%); when that finds nothing (or `use_detector=False`), the
    whole image is meshed as one face with score 0.0 (no detector confidence), unless
    min_face_score > 0.
    `keypoint_model`: a keypoint_regressor checkpoint (ferlib.realign). A detector box whose mesh
    fails is re-cropped FER2013-style and retried keypoint-aligned; a small image where every other
    path found nothing is retried keypoint-aligned as a whole (score 0.0).
    """

    def __init__(self, mode: str = "video", max_faces: int = 5, min_detection_confidence: float = 0.5,
                 min_face_score: float = 0.0, use_detector: bool = True, tracking: bool = True,
                 redetect_every: int = 30, keypoint_model=None):
        if mode not in ("video", "static"):
            raise InputError(f"extractor mode must be 'video' or 'static', got {mode!r}")
        if max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {max_faces}")
        if not 0.0 <= min_detection_confidence <= 1.0 or not 0.0 <= min_face_score <= 1.0:
            raise InputError("min_detection_confidence and min_face_score must lie in [0, 1]")
        if int(redetect_every) != redetect_every or redetect_every < 1:
            raise InputError(f"redetect_every must be an integer >= 1, got {redetect_every!r}")
        _quiet_mediapipe()
        import mediapipe as mp

        self._realign, self.keypoint_model = None, None
        self.set_keypoint_model(keypoint_model)

        self.mode, self.max_faces = mode, max_faces
        self.min_face_score, self.use_detector = min_face_score, use_detector
        self._min_conf = min_detection_confidence
        self.tracking = bool(tracking) and mode == "video" and use_detector
        self.redetect_every = int(redetect_every)
        # full-frame tracking meshes by max_num_faces (= faces the last detector pass kept): a mesh
        # asked for more faces than it tracks runs its own detector on every frame (+1 ms)
        self._trackers: dict = {}
        self._active: int | None = None  # tracker in use; any other is reset before use
        self._scores: dict[int, float] = {}  # face_id -> score of its last matching detection
        self._since_detect: int | None = None  # frames since the last detector pass; None: detect now
        self._detected = 0  # faces the last detector pass kept
        self._shape: tuple[int, int] | None = None
        self._near = None  # short-range BlazeFace, made on the first small image
        with _STDERR_LOCK, _native_stderr_silenced():
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_detection_confidence) if use_detector else None
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence)
            blank = np.full((64, 64, 3), 128, np.uint8)  # start the graphs now, while muted
            for g in (self._detector, self._mesh):
                if g is not None:
                    g.process(blank)
        self._tracks: list[tuple[int, tuple, int]] = []  # (face_id, box, frames since seen)
        self._next_id = 0
        self._last_ts: float | None = None

    # -- public -------------------------------------------------------------------------------
    def process(self, bgr: np.ndarray, timestamp_ms: float | None = None) -> list[Face]:
        """Faces in one BGR uint8 frame (an empty list means no face), ordered by face_id."""
        if self._mesh is None:
            raise InputError("LandmarkExtractor is closed")
        bgr = ensure_bgr(bgr, name="frame")
        h, w = bgr.shape[:2]
        if self.mode == "video" and timestamp_ms is not None:
            if self._last_ts is not None and timestamp_ms < self._last_ts:
                self.reset()
            self._last_ts = float(timestamp_ms)
        if self.tracking and max(h, w) >= SMALL_SIDE:
            return self._process_tracked(bgr)
        scale, ox, oy = 1.0, 0.0, 0.0
        original = bgr
        if max(h, w) < SMALL_SIDE:
            bgr, scale, ox, oy = self._upscale_pad(bgr)
        faces = []
        for box, score in self._detect(bgr, near=scale != 1.0):
            pts = self._mesh_box(bgr, box)
            if pts is not None:
                faces.append((pts, box, score))
        if not faces and self.min_face_score == 0 and (max(h, w) < SMALL_SIDE or not self.use_detector):
            # Tight crops (FER2013): BlazeFace often fails; mesh the whole padded image as one face.
            pts = self._mesh_image(bgr)
            if pts is None and self._realign is not None and max(h, w) < SMALL_SIDE:
                pts = self._realign.retry(original, self._find_small)
                if pts is not None:  # into the upscaled, padded image's pixels like the others
                    pts[:, :2] = pts[:, :2] * scale + (ox, oy)
                    pts[:, 2] *= scale
            if pts is not None:
                faces.append((pts, self._box_of(pts), 0.0))
        out = []
        for pts, box, score in faces:
            pts = pts.copy()
            pts[:, :2] = (pts[:, :2] - (ox, oy)) / scale
            pts[:, 2] /= scale
            bx = ((box[0] - ox) / scale, (box[1] - oy) / scale, (box[2] - ox) / scale, (box[3] - oy) / scale)
            bx = (max(0.0, bx[0]), max(0.0, bx[1]), min(float(w), bx[2]), min(float(h), bx[3]))
            out.append(Face(landmarks=pts.astype(np.float32), box=bx, score=float(score)))
        self._assign_ids(out)
        for f in out:
            f.pose = _pose(f.landmarks)
        return out

    def set_keypoint_model(self, path) -> None:
        """Turn the keypoint-aligned retry of missed faces on (a keypoint_regressor checkpoint,
        ferlib.realign) or off (None). Loading the same checkpoint again is a no-op."""
        if path is None:
            self._realign, self.keypoint_model = None, None
        elif self._realign is None or self.keypoint_model != str(path):
            from ferlib.realign import KeypointRealigner

            self._realign, self.keypoint_model = KeypointRealigner(path), str(path)

    def close(self) -> None:
        """Release the MediaPipe graphs (idempotent)."""
        for g in (self._detector, self._near, self._mesh, *self._trackers.values()):
            if g is not None:
                g.close()
        self._detector = self._near = self._mesh = None
        self._trackers, self._active = {}, None

    def reset(self) -> None:
        """Forget tracked faces (a new stream starts)."""
        self._tracks, self._next_id, self._last_ts = [], 0, None
        self._scores, self._since_detect, self._detected, self._active = {}, None, 0, None

    def __enter__(self) -> "LandmarkExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _upscale_pad(bgr):
        h, w = bgr.shape[:2]
        scale = SMALL_UPSCALE / max(h, w)
        big = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        pad = round(SMALL_UPSCALE * SMALL_PAD)
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return big, scale, float(pad), float(pad)

    def _detect(self, bgr, near: bool = False) -> list[tuple[tuple, float]]:
        """BlazeFace boxes and scores; `near`: the short-range model (upscaled small images)."""
        if self._detector is None:
            return []
        if near and self._near is None:
            import mediapipe as mp

            with _STDERR_LOCK, _native_stderr_silenced():
                self._near = mp.solutions.face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=self._min_conf)
        h, w = bgr.shape[:2]
        res = (self._near if near else self._detector).process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        dets = []
        for d in res.detections or []:
            score = float(d.score[0])
            if score < self.min_face_score:
                continue
            rb = d.location_data.relative_bounding_box
            x0, y0 = rb.xmin * w, rb.ymin * h
            dets.append(((x0, y0, x0 + rb.width * w, y0 + rb.height * h), score))
        dets.sort(key=lambda d: -d[1])
        return dets[: self.max_faces]

    def _mesh_box(self, bgr, box, retry: bool = True) -> np.ndarray | None:
        """Mesh the face in a detector box (a square crop around it); points in `bgr`'s pixels.
        `retry`: when that fails and a keypoint model is set, a FER2013-framed crop, keypoint-aligned."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        longer = max(box[2] - box[0], box[3] - box[1])
        crop, x0, y0 = square_crop(bgr, cx, cy, (1 + CROP_MARGIN) * longer)
        pts = self._mesh_image(crop)
        if pts is None and retry and self._realign is not None:
            crop, x0, y0 = square_crop(bgr, cx, cy + FER_CROP_SHIFT * longer, (1 + FER_CROP_MARGIN) * longer)
            pts = self._realign.retry(crop, self._find_small)
        if pts is None:
            return None
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts

    def _find_small(self, img) -> np.ndarray | None:
        """Points (in `img`'s pixels) of the first face the small-image path finds in `img`:
        upscale and pad, short-range BlazeFace + mesh per box, else the whole image meshed."""
        big, scale, ox, oy = self._upscale_pad(img)
        pts = None
        for box, _ in self._detect(big, near=True):
            pts = self._mesh_box(big, box, retry=False)
            if pts is not None:
                break
        if pts is None:
            pts = self._mesh_image(big)
        if pts is None:
            return None
        pts[:, :2] = (pts[:, :2] - (ox, oy)) / scale
        pts[:, 2] /= scale
        return pts

    def _mesh_image(self, bgr) -> np.ndarray | None:
        """Mesh the one face in `bgr`; points in `bgr`'s pixels (z scaled like x), or None."""
        h, w = bgr.shape[:2]
        s = MESH_INPUT / max(h, w)
        img = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        res = self._mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        ih, iw = img.shape[:2]
        pts = np.array([(p.x * iw, p.y * ih, p.z * iw) for p in lm], dtype=np.float64) / s
        return pts

    @staticmethod
    def _box_of(pts) -> tuple[float, float, float, float]:
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    def _tracker(self, k: int):
        """The full-frame tracking face mesh for k faces, reset when it was not the last one used."""
        if self._active != k or k not in self._trackers:
            import mediapipe as mp

            with _STDERR_LOCK, _native_stderr_silenced():
                if k in self._trackers:
                    self._trackers[k].reset()
                else:
                    self._trackers[k] = mp.solutions.face_mesh.FaceMesh(
                        static_image_mode=False, max_num_faces=k, refine_landmarks=True,
                        min_detection_confidence=self._min_conf)
                self._trackers[k].process(np.full((64, 64, 3), 128, np.uint8))  # start it while muted
            self._active = k
        return self._trackers[k]

    def _process_tracked(self, bgr) -> list[Face]:
        """Video mode's tracking path (class docstring): faces with ids and pose."""
        h, w = bgr.shape[:2]
        if self._shape != (h, w):
            self._shape, self._since_detect, self._active = (h, w), None, None
        pts, boxes, scores = [], [], []
        if self._since_detect is not None and self._detected:
            res = self._tracker(self._detected).process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            pts = [_pixel_points(fl, w, h) for fl in res.multi_face_landmarks or []]
            boxes = [_clip_box(self._box_of(p), w, h) for p in pts]
            scores = [self._scores.get(i) for i in self._match(boxes)]
        if (self._since_detect is None or self._since_detect + 1 >= self.redetect_every
                or len(pts) < self._detected or not pts or None in scores):
            dets = self._detect(bgr)
            used_d = set()
            for fi, di in self._greedy(boxes, [d[0] for d in dets]):
                scores[fi] = dets[di][1]
                used_d.add(di)
            faces = [(p, b, s) for p, b, s in zip(pts, boxes, scores) if s is not None]  # unconfirmed: dropped
            for di, (box, score) in enumerate(dets):
                if di not in used_d and len(faces) < self.max_faces:
                    p = self._mesh_box(bgr, box)
                    if p is not None:
                        faces.append((p, _clip_box(self._box_of(p), w, h), score))
            self._since_detect, self._detected = 0, len(faces)
        else:
            self._since_detect += 1
            faces = list(zip(pts, boxes, scores))
        out = [Face(landmarks=p.astype(np.float32), box=b, score=float(s)) for p, b, s in faces]
        self._assign_ids(out)
        self._scores = {f.face_id: f.score for f in out}
        for f in out:
            f.pose = _pose(f.landmarks)
        return out

    @staticmethod
    def _greedy(boxes_a, boxes_b) -> list[tuple[int, int]]:
        """Greedy one-to-one matching by IoU (highest first, >= TRACK_IOU): (index in a, index in b)."""
        pairs = sorted(((_iou(a, b), ai, bi) for ai, a in enumerate(boxes_a) for bi, b in enumerate(boxes_b)),
                       reverse=True)
        used_a, used_b, out = set(), set(), []
        for iou, ai, bi in pairs:
            if iou < TRACK_IOU or ai in used_a or bi in used_b:
                continue
            out.append((ai, bi))
            used_a.add(ai)
            used_b.add(bi)
        return out

    def _match(self, boxes) -> list[int | None]:
        """Track id of each box (None: no track), as `_assign_ids` would match them."""
        ids: list[int | None] = [None] * len(boxes)
        for fi, ti in self._greedy(boxes, [t[1] for t in self._tracks]):
            ids[fi] = self._tracks[ti][0]
        return ids

    def _assign_ids(self, faces: list[Face]) -> None:
        if self.mode == "static":
            faces.sort(key=lambda f: f.box[0])
            for i, f in enumerate(faces):
                f.face_id = i
            return
        used_f, used_t = set(), set()
        for fi, ti in self._greedy([f.box for f in faces], [t[1] for t in self._tracks]):
            faces[fi].face_id = self._tracks[ti][0]
            used_f.add(fi)
            used_t.add(ti)
        for fi in sorted(set(range(len(faces))) - used_f, key=lambda i: faces[i].box[0]):
            faces[fi].face_id = self._next_id
            self._next_id += 1
        tracks = [(f.face_id, f.box, 0) for f in faces]
        tracks += [(t[0], t[1], t[2] + 1) for ti, t in enumerate(self._tracks)
                   if ti not in used_t and t[2] + 1 <= TRACK_MAX_MISSES]
        self._tracks = tracks
        faces.sort(key=lambda f: f.face_id)


# A serialised NormalizedLandmarkList: per landmark field 1 (length 15) holding fields 1-3 (x, y, z) as float32.
_landmark_record = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"),
                             ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])
_landmark_tags = {"tag": 0x0A, "len": 15, "tx": 0x0D, "ty": 0x15, "tz": 0x1D}


def _pixel_points(landmark_list, w: int, h: int) -> np.ndarray:
    """(N, 3) float64 (x * w, y * h, z * w) of a NormalizedLandmarkList. Reads the serialised message
    when every landmark holds just x, y, z (as the face mesh sends them): 0.02 instead of 0.2 ms."""
    raw = landmark_list.SerializeToString()
    if raw and len(raw) % _landmark_record.itemsize == 0:
        a = np.frombuffer(raw, _landmark_record)
        if all((a[k] == v).all() for k, v in _landmark_tags.items()):
            return np.stack([a["x"], a["y"], a["z"]], axis=1).astype(np.float64) * (w, h, w)
    return np.array([(q.x * w, q.y * h, q.z * w) for q in landmark_list.landmark], dtype=np.float64)


def _clip_box(box, w: int, h: int) -> tuple[float, float, float, float]:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def _pose(pts: np.ndarray) -> tuple[float, float, float] | None:
    try:
        return head_pose(pts)
    except FerError:  # no canonical face yet (scripts/make_canonical_face.py bootstraps it)
        return None


def face_crop(bgr: np.ndarray, face: Face, size: int = 48, grey: bool = True,
              margin: float = FER_CROP_MARGIN) -> np.ndarray:
    """Square face crop for image models, framed like FER2013 (tight face) and resized to size x size.

    Square of side (1 + margin) * the longer side of the landmarks' bounding box (the detector box
    if landmarks are missing), its centre moved FER_CROP_SHIFT * that side down (negative: up).
    Returns uint8 (size, size) when grey, else (size, size, 3) BGR.
    """
    bgr = ensure_bgr(bgr, name="frame")
    if size < 1:
        raise InputError(f"face crop size must be >= 1, got {size}")
    lm = getattr(face, "landmarks", None)
    if lm is not None and len(lm):
        x0, y0, x1, y1 = LandmarkExtractor._box_of(np.asarray(lm))
    else:
        x0, y0, x1, y1 = face.box
    longer = max(x1 - x0, y1 - y0)
    side = (1 + margin) * longer
    if side < 1:
        raise InputError(f"face box {face.box} is empty")
    crop, _, _ = square_crop(bgr, (x0 + x1) / 2, (y0 + y1) / 2 + FER_CROP_SHIFT * longer, side)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if grey else crop
