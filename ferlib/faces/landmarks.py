"""Faces of a frame: the detection cascade (ferlib.faces.detection), face mesh on each face
(ferlib.faces.mesh), stable ids (ferlib.faces.tracking). Docs: docs/landmarks.md.

Every face a detector finds is kept: where face mesh fails on it (a profile, a hand over the face,
blur), it stays with its detector box and no landmarks (`Face.path == "box"`). For a still where no
detector finds a face, the whole image is taken as the face when a face mesh fits it (a tight face
crop). With `mesh=False` (image models) face mesh runs only for that last stage.

An extractor owns its MediaPipe graphs and is NOT thread-safe: use one per stream/thread.
"""
from __future__ import annotations

import numpy as np

from ferlib.errors import FerError, InputError
from ferlib.faces.crops import FER_CROP_MARGIN, FER_CROP_SHIFT, box_of, face_crop, square_crop  # noqa: F401 (re-exported)
from ferlib.faces.detection import (  # noqa: F401
    RETRY_PADS,
    SMALL_PAD,
    SMALL_SIDE,
    SMALL_UPSCALE,
    Detection,
    FaceDetector,
    Scaled,
    clip_box,
    upscale_pad,
)
from ferlib.faces.mesh import CROP_MARGIN, MESH_INPUT, FaceMesher  # noqa: F401 (cache settings read these)
from ferlib.faces.normalize import head_pose
from ferlib.faces.realign import KeypointRealigner
from ferlib.faces.tracking import FaceTracker, greedy_match
from ferlib.io import ensure_bgr
from ferlib.types import Face

FRONT_END = 4
"""Version of the face front end (part of the landmark cache's key): 2 = the detection cascade for
every image size, stills' whole-image stage, faces kept without landmarks; 3: RETRY_PADS; 4: the
short-range stage's smoothed retry (ferlib.faces.detection.SMOOTH_KERNEL)."""
MODES = ("video", "static")


class LandmarkExtractor:
    """Faces (boxes, 478-point landmarks where face mesh reads them, head pose, ids) of frames.

    mode "video": stable `face_id`s across consecutive frames (ferlib.faces.tracking); "static": ids are
    the faces' left-to-right order, and the whole-image stage runs when no detector finds a face.
    Setting `mode` (or `mesh`) later resets the extractor.
    Video mode with `tracking=True` and `mesh=True` (frames >= SMALL_SIDE): a tracking face mesh on the
    full frame follows the faces; the detector + per-box meshing run only on the first frame (after a
    reset, a frame size change or a timestamp going backwards), when the tracker returns fewer faces
    than the last detector pass meshed, a face no detector pass confirmed, while a face is kept
    without landmarks, and every `redetect_every` frames (new faces). Tracked faces keep the score of
    their last matching detection, their box is the landmarks' bounding box.
    mesh=False: no face mesh on detector boxes (faces carry boxes only: image models need no more),
    except in frames that hold at most `mesh_max_faces` faces (default 0: none), whose boxes are
    meshed one by one (image models frontalise such faces: ferlib.faces.crops.frontal_crop);
    in video mode the detector then runs on every `box_every`-th frame (default 2) and the frames
    between keep the last boxes and ids: at 30 fps a face moves a few pixels from one frame to the
    next, and detection is most of an image model's frame (reset, a new frame size or a timestamp
    going backwards detects at once).
    keep_unmeshed=False: drop faces face mesh cannot read (the dataset cache keeps landmarks only).
    Faces whose detector score is below `min_face_score` are dropped; the whole-image stage (score
    0.0) runs only when min_face_score is 0. Small images (< SMALL_SIDE px) go straight to the
    short-range stage; `use_detector=False` skips the detectors (the whole-image stage only).
    `realigner`: a KeypointRealigner (ferlib.faces.realign; `ferlib.inference.keypoints.load_realigner`
    makes one from a keypoint_regressor checkpoint). A detector box whose mesh
    fails is re-cropped FER2013-style and retried keypoint-aligned; a small image where every other
    path found nothing is retried keypoint-aligned as a whole (score 0.0).
    """

    _last_ts: float | None  # timestamp of the last video frame (reset: None)

    def __init__(self, mode: str = "video", max_faces: int = 5, min_detection_confidence: float = 0.5,
                 min_face_score: float = 0.0, use_detector: bool = True, tracking: bool = True,
                 redetect_every: int = 30, realigner: KeypointRealigner | None = None, mesh: bool = True,
                 keep_unmeshed: bool = True, box_every: int = 2, mesh_max_faces: int = 0):
        if max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {max_faces}")
        if not isinstance(mesh_max_faces, int) or mesh_max_faces < 0:
            raise InputError(f"mesh_max_faces must be a whole number >= 0, got {mesh_max_faces!r}")
        self.mesh_max_faces = mesh_max_faces
        if not 0.0 <= min_detection_confidence <= 1.0 or not 0.0 <= min_face_score <= 1.0:
            raise InputError("min_detection_confidence and min_face_score must lie in [0, 1]")
        for name, value in (("redetect_every", redetect_every), ("box_every", box_every)):
            if int(value) != value or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        self._realign: KeypointRealigner | None = realigner
        self.max_faces, self.min_face_score, self.use_detector = max_faces, min_face_score, use_detector
        self.keep_unmeshed = bool(keep_unmeshed)
        self.redetect_every, self.box_every = int(redetect_every), int(box_every)
        self._min_conf = min_detection_confidence
        self._want_tracking = bool(tracking)
        self._mode, self._mesh_on = "video", bool(mesh)
        self._tracker = FaceTracker()
        self.mode = mode  # validates, sets tracking, resets
        self._detector = FaceDetector(max_faces, min_detection_confidence, min_face_score) if use_detector else None
        self._mesher: FaceMesher | None = FaceMesher(min_detection_confidence) if mesh else None
        self._closed = False

    # -- settings ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise InputError(f"extractor mode must be 'video' or 'static', got {mode!r}")
        self._mode = mode
        self.reset()

    @property
    def mesh(self) -> bool:
        return self._mesh_on

    @mesh.setter
    def mesh(self, on: bool) -> None:
        if bool(on) != self._mesh_on:
            self._mesh_on = bool(on)
            self.reset()

    @property
    def tracking(self) -> bool:
        """Whether video frames take the tracking-mesh path (see the class docstring)."""
        return self._want_tracking and self._mode == "video" and self.use_detector and self._mesh_on

    @property
    def keypoint_model(self) -> str | None:
        """Where the realigner's regressor came from (None: the keypoint-aligned retry is off)."""
        return None if self._realign is None else self._realign.source

    def set_realigner(self, realigner: KeypointRealigner | None) -> None:
        """Turn the keypoint-aligned retry of missed faces on (a KeypointRealigner) or off (None)."""
        self._realign = realigner

    # -- public --------------------------------------------------------------------------------
    def process(self, bgr: np.ndarray, timestamp_ms: float | None = None, pose: bool = True) -> list[Face]:
        """Faces in one BGR uint8 frame (an empty list means no face), ordered by face_id.
        pose=False leaves `Face.pose` None, for the caller to fill in later with `face_pose`
        (Pipeline.stream does that in its classifying thread, off the face-finding one)."""
        if self._closed:
            raise InputError("LandmarkExtractor is closed")
        bgr = ensure_bgr(bgr, name="frame")
        h, w = bgr.shape[:2]
        if self._mode == "video" and timestamp_ms is not None:
            if self._last_ts is not None and timestamp_ms < self._last_ts:
                self.reset()
            self._last_ts = float(timestamp_ms)
        if self.tracking and max(h, w) >= SMALL_SIDE:
            faces = self._process_tracked(bgr)
        elif self._boxes_only_video and max(h, w) >= SMALL_SIDE:
            faces = self._process_boxes(bgr)
        else:
            faces = self._process_detected(bgr)
        if not self._mesh_on and max(h, w) >= SMALL_SIDE and len(faces) <= self.mesh_max_faces:
            self.mesh_faces(bgr, faces, pose=False)
        if pose:
            for f in faces:
                f.pose = face_pose(f.landmarks)
        return faces

    def detector_box(self, bgr: np.ndarray, face: Face) -> tuple[float, float, float, float] | None:
        """The detector's box of `face` in this frame: the detection that overlaps its box most (IoU of at
        least TRACK_IOU), None when none does. Image models crop a face on its detector box
        (ferlib.faces.crops.model_crop); a face of the tracking path carries its landmarks' box instead, so
        the Studio asks for this one when it stores a sample's crop."""
        bgr = ensure_bgr(bgr, name="frame")
        h, w = bgr.shape[:2]
        if self._detector is None or max(h, w) < SMALL_SIDE:
            return None
        dets = self._detector.detect(bgr)
        pairs = greedy_match([face.box], [d.box for d in dets])
        return clip_box(dets[pairs[0][1]].box, w, h) if pairs else None

    def mesh_faces(self, bgr: np.ndarray, faces: list[Face], pose: bool = True) -> None:
        """Mesh, in place, the detector box of each face of this frame that has no landmarks (the face
        mesh of one box, no retry; a face it cannot read keeps none); pose: fill in their `Face.pose`."""
        for f in faces:
            if f.landmarks is None:
                pts = self._mesh_box(bgr, f.box, retry=False)
                f.landmarks = None if pts is None else pts.astype(np.float32)
                if pose:
                    f.pose = face_pose(f.landmarks)

    def close(self) -> None:
        """Release the MediaPipe graphs (idempotent)."""
        for part in (self._detector, self._mesher):
            if part is not None:
                part.close()
        self._detector = self._mesher = None
        self._closed = True

    def reset(self) -> None:
        """Forget tracked faces (a new stream starts)."""
        self._tracker.reset()
        self._last_ts = None
        self._scores: dict[int, float] = {}  # face_id -> score of its last matching detection
        self._since_detect: int | None = None  # frames since the last detector pass; None: detect now
        self._meshed = 0  # faces with landmarks the last detector pass kept (the tracking mesh follows them)
        self._unmeshed = 0  # faces without landmarks it kept (they need the detector on every frame)
        self._shape: tuple[int, int] | None = None
        self._last_boxes: list[Face] = []
        mesher = getattr(self, "_mesher", None)  # None before __init__ has made it
        if mesher is not None:
            mesher.reset_tracking()

    def __enter__(self) -> "LandmarkExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def _boxes_only_video(self) -> bool:
        return self._mode == "video" and not self._mesh_on and self.use_detector and self.box_every > 1

    def _process_boxes(self, bgr) -> list[Face]:
        """mesh=False video frames: the detector path on every `box_every`-th frame, else the last
        faces' boxes, scores and ids again."""
        shape = bgr.shape[:2]
        if self._since_detect is None or self._since_detect + 1 >= self.box_every or shape != self._shape:
            faces = self._process_detected(bgr)
            self._since_detect, self._shape, self._last_boxes = 0, shape, faces
            return faces
        self._since_detect += 1
        return [Face(landmarks=None, box=f.box, score=f.score, face_id=f.face_id) for f in self._last_boxes]

    # -- the detector path -------------------------------------------------------------------------
    def _mesh(self) -> FaceMesher:
        if self._mesher is None:  # mesh=False: made when the whole-image stage first needs it
            self._mesher = FaceMesher(self._min_conf)
        return self._mesher

    def _process_detected(self, bgr) -> list[Face]:
        """Cascade + mesh per box (+ the whole-image stage); ids by the tracker."""
        h, w = bgr.shape[:2]
        small = max(h, w) < SMALL_SIDE
        scaled = Scaled(bgr, 1.0, 0.0, 0.0)
        dets: list[Detection] = []
        if small:
            scaled, dets = self._detector.detect_small(bgr) if self._detector is not None else (upscale_pad(bgr), [])
        elif self._detector is not None:
            dets = self._detector.detect(bgr)
        work = scaled.image
        found = []
        for d in dets:
            pts = self._mesh_box(work, d.box) if self._mesh_on else None
            if pts is not None or self.keep_unmeshed or not self._mesh_on:
                found.append((pts, d.box, d.score))
        if not found and self.min_face_score == 0 and (small or self._detector is None or self._mode == "static"):
            # The input is itself a face crop (FER2013, an aligned 350 px crop): mesh the whole image.
            whole = upscale_pad(bgr) if small else scaled  # the default pad, as before the retries
            pts = self._mesh().mesh_image(whole.image)
            if pts is None and self._realign is not None and small:
                pts = self._realign.retry(bgr, self._find_small)
                if pts is not None:  # into the upscaled, padded image's pixels like the others
                    pts[:, :2] = pts[:, :2] * whole.scale + (whole.ox, whole.oy)
                    pts[:, 2] *= whole.scale
            if pts is not None:
                scaled = whole
                found.append((pts, box_of(pts), 0.0))
        faces = [Face(landmarks=None if pts is None else scaled.back(pts).astype(np.float32),
                      box=clip_box(scaled.back_box(box), w, h), score=float(score)) for pts, box, score in found]
        self._tracker.assign(faces, still=self._mode == "static")
        return faces

    def _mesh_box(self, bgr, box, retry: bool = True) -> np.ndarray | None:
        """Mesh the face in a detector box; points in `bgr`'s pixels. `retry`: when that fails and a
        keypoint model is set, a FER2013-framed crop, keypoint-aligned."""
        pts = self._mesh().mesh_box(bgr, box)
        if pts is None and retry and self._realign is not None:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            longer = max(box[2] - box[0], box[3] - box[1])
            crop, x0, y0 = square_crop(bgr, cx, cy + FER_CROP_SHIFT * longer, (1 + FER_CROP_MARGIN) * longer)
            pts = self._realign.retry(crop, self._find_small)
            if pts is not None:
                pts[:, 0] += x0
                pts[:, 1] += y0
        return pts

    def _find_small(self, img) -> np.ndarray | None:
        """Points (in `img`'s pixels) of the first face the small-image path finds in `img`:
        upscale and pad, short-range BlazeFace + mesh per box, else the whole image meshed."""
        scaled = upscale_pad(img)
        pts = None
        for d in self._detector.detect_scaled(scaled) if self._detector is not None else []:
            pts = self._mesh_box(scaled.image, d.box, retry=False)
            if pts is not None:
                break
        if pts is None:
            pts = self._mesh().mesh_image(scaled.image)
        return None if pts is None else scaled.back(pts)

    # -- the tracking path -----------------------------------------------------------------------
    def _process_tracked(self, bgr) -> list[Face]:
        """Video mode's tracking path (class docstring): faces with ids."""
        h, w = bgr.shape[:2]
        mesher = self._mesh()
        if self._shape != (h, w):
            self._shape, self._since_detect = (h, w), None
            mesher.reset_tracking()
        pts, boxes, scores = [], [], []
        if self._since_detect is not None and self._meshed:
            pts = mesher.track(bgr, self._meshed)
            boxes = [clip_box(box_of(p), w, h) for p in pts]
            scores = [None if i is None else self._scores.get(i) for i in self._tracker.match(boxes)]
        if (self._since_detect is None or self._since_detect + 1 >= self.redetect_every or self._unmeshed
                or len(pts) < self._meshed or not pts or None in scores):
            assert self._detector is not None, "the tracking path needs the detector (use_detector)"
            dets = self._detector.detect(bgr)
            used = set()
            for fi, di in greedy_match(boxes, [d.box for d in dets]):
                scores[fi] = dets[di].score
                used.add(di)
            faces: list[tuple[np.ndarray | None, tuple[float, float, float, float], float]] = [
                (p, b, s) for p, b, s in zip(pts, boxes, scores) if s is not None]  # unconfirmed: dropped
            for di, d in enumerate(dets):
                if di in used or len(faces) >= self.max_faces:
                    continue
                p = self._mesh_box(bgr, d.box)
                if p is not None:
                    faces.append((p, clip_box(box_of(p), w, h), d.score))
                elif self.keep_unmeshed:
                    faces.append((None, clip_box(d.box, w, h), d.score))
            self._since_detect = 0
            self._meshed = sum(p is not None for p, _, _ in faces)
            self._unmeshed = len(faces) - self._meshed
        else:
            self._since_detect += 1
            faces = [(p, b, s) for p, b, s in zip(pts, boxes, scores) if s is not None]  # none is None here
        out = [Face(landmarks=None if p is None else p.astype(np.float32), box=b, score=float(s))
               for p, b, s in faces]
        self._tracker.assign(out)
        self._scores = {f.face_id: f.score for f in out}
        return out


def face_pose(pts: np.ndarray | None) -> tuple[float, float, float] | None:
    """`Face.pose` of a face's landmarks: (yaw, pitch, roll) in degrees, None without landmarks (or
    without a canonical face)."""
    if pts is None:
        return None
    try:
        yaw, pitch, roll = head_pose(pts)  # one face: a tuple
        return float(yaw), float(pitch), float(roll)
    except FerError:  # no canonical face yet (scripts/make_canonical_face.py bootstraps it)
        return None
