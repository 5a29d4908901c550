"""WebRTC video processors of the Live and Studio pages (overlays drawn by ferlib.inference.draw).

The processors run in streamlit-webrtc's worker thread: no ``st.*`` call in here. The page sets
their settings through plain attributes (read once per frame) and reads their results from
``self.results``, a bounded queue that drops the oldest item when full. Each processor builds its
own Pipeline / LandmarkExtractor lazily in the worker thread (MediaPipe graphs are not
thread-safe) and closes it in ``on_ended`` so closed tabs release their graphs.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import av
import cv2
import numpy as np
from streamlit_webrtc import VideoProcessorBase

from ferlib.errors import FerError, StorageError
from ferlib.faces.crops import face_crop
from ferlib.faces.normalize import normalize
from ferlib.inference.draw import draw_faces, draw_result
from ferlib.types import Face, FrameResult, largest_face, main_prediction

QUEUE_SIZE = 512
CALIBRATION_FRAMES = 15
STUDIO_CROP_SIZE = 112


def put_dropping(q: queue.Queue, item: Any) -> None:
    """Put `item` on a bounded queue, dropping the oldest item when it is full."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


def drain(q: queue.Queue) -> list:
    """Everything currently in `q`."""
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


PATH_WORDS = {"mesh": "face mesh landmarks", "box": "detector box only"}
"""A prediction's path in words a person watching understands (the face table beside Live's video)."""


def chosen_face(predictions, face_id: int | None):
    """The prediction of the tracked face `face_id`, else the largest face (`types.main_prediction`)."""
    if face_id is not None:
        for p in predictions:
            if p.face.face_id == face_id:
                return p
    return main_prediction(predictions)


class LiveProcessor(VideoProcessorBase):
    """Runs a Pipeline on each frame, draws its result and queues per-frame stats.

    Settings (set by the page): ``model_path``, ``smoothing``, ``mesh`` (the overlay; an image model's faces
    are meshed after the model has read them, `Pipeline.set_overlay_mesh`), ``keypoint_model`` (a
    keypoint_regressor checkpoint path for the retry of missed faces, or None); ``request_calibration()``
    averages the main face's normalised landmarks over CALIBRATION_FRAMES frames and passes them to
    ``pipeline.set_neutral_baseline``; ``clear_calibration()`` passes None. ``main_face_id``: the tracked
    face whose label, probabilities and bars the page follows (None or gone: the largest face).
    Queue items: dict(t, frame, latency_ms, faces, label, probs, classes, pose, path, model, model_path
    (the checkpoint the frame ran through), timings, face_rows (one dict per face: id, emotion, p, path,
    main), main_id) or dict(error=message).
    """

    def __init__(self, pipeline_factory: Callable[[str, str], Any], model_path: str,
                 smoothing: str = "none", mesh: bool = False, keypoint_model: str | None = None):
        self.pipeline_factory = pipeline_factory
        self.model_path, self.smoothing, self.mesh = model_path, smoothing, mesh
        self.keypoint_model = keypoint_model
        self.results: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.frames = 0
        self._pipeline = None
        self._built = (None, None)  # (model path, smoothing) the pipeline was set up with
        self._lock = threading.Lock()
        self._calib: list[np.ndarray] | None = None
        self._clear_calib = False
        self.calibrated = False
        self.main_face_id: int | None = None

    def request_calibration(self) -> None:
        with self._lock:
            self._calib = []

    def clear_calibration(self) -> None:
        with self._lock:
            self._clear_calib = True

    def _get_pipeline(self):
        model_path, smoothing = self.model_path, self.smoothing
        if self._pipeline is None or self._built[0] != model_path:
            self._close()
            self._pipeline = self.pipeline_factory(model_path, smoothing)
            self.calibrated = False
        elif self._built[1] != smoothing:
            self._pipeline.set_smoothing(smoothing)
        self._built = (model_path, smoothing)
        self._pipeline.set_keypoint_model(self.keypoint_model)  # pooled pipelines keep theirs: a no-op then
        # image models run face mesh for the overlay after the model has read the faces (head pose too)
        self._pipeline.set_overlay_mesh(self.mesh)
        return self._pipeline

    def _calibrate(self, pipe, result: FrameResult) -> None:
        with self._lock:
            if self._clear_calib:
                self._clear_calib, self._calib = False, None
                pipe.set_neutral_baseline(None)
                self.calibrated = False
            main = main_prediction(result.predictions)
            if self._calib is None or main is None or main.face.landmarks is None:
                return
            self._calib.append(normalize(main.face.landmarks, pipe.spec.method))
            if len(self._calib) >= CALIBRATION_FRAMES:
                # The mean normalised face; build_batch normalises it again, which leaves it as it is.
                pipe.set_neutral_baseline(np.mean(self._calib, axis=0).astype(np.float32))
                self._calib = None
                self.calibrated = True

    def recv(self, frame: av.VideoFrame) -> av.VideoFrame:
        bgr = frame.to_ndarray(format="bgr24")
        t0 = time.perf_counter()
        try:
            pipe = self._get_pipeline()
            ts = frame.time * 1000.0 if frame.time is not None else None
            result = pipe.process(bgr, ts, self.frames)
            self._calibrate(pipe, result)
        except (FerError, RuntimeError, ValueError) as e:
            put_dropping(self.results, {"error": f"{type(e).__name__}: {e}"})
            return frame
        latency = (time.perf_counter() - t0) * 1000.0
        self.frames += 1
        main = chosen_face(result.predictions, self.main_face_id)
        put_dropping(self.results, {
            "t": time.time(), "frame": self.frames, "latency_ms": latency, "faces": len(result.predictions),
            "label": main.label if main else None,
            "probs": main.probs.astype(float).tolist() if main else None,
            "classes": list(main.classes) if main else None,
            "pose": main.face.pose if main else None, "path": main.path if main else None,
            "model": main.model if main else None, "model_path": self._built[0],
            "timings": dict(result.timings_ms), "main_id": main.face.face_id if main else None,
            "face_rows": [{"id": p.face.face_id, "emotion": p.label, "p": float(np.max(p.probs)),
                           "path": PATH_WORDS.get(p.path, p.path), "main": p is main} for p in result.predictions]})
        out = draw_result(bgr.copy(), result, self.mesh, main=main)
        return av.VideoFrame.from_ndarray(out, format="bgr24")

    def _close(self) -> None:
        close = getattr(self._pipeline, "close", None)
        if close is not None:
            close()
        self._pipeline = None

    def on_ended(self) -> None:
        self._close()


def studio_crop(extractor, bgr: np.ndarray, face: Face) -> np.ndarray:
    """A sample's stored colour crop (STUDIO_CROP_SIZE px): the face framed on its detector box, as
    `predict` and Live frame it for image models (the models personal training fine-tunes), so a
    personal model learns the framing it will read; framed on its landmarks when no detection matches
    it. (The Studio's tracking mesh gives a face its landmarks' box, whose framing moves with the
    expression: on the committed clip the crying face's landmark crop is 0.95 of its detector crop, the
    laughing one's 1.00.)"""
    box = extractor.detector_box(bgr, face)
    framed = face if box is None else Face(landmarks=None, box=box, score=face.score)
    return face_crop(bgr, framed, size=STUDIO_CROP_SIZE, grey=False)


class StudioRecorder(VideoProcessorBase):
    """Finds the main face on each frame and stores samples into the Store.

    Settings (set by the page): ``session_id``, ``emotion``, ``condition``, ``recording`` (bool),
    ``rate_hz`` (continuous recording rate); ``capture_one()`` stores the next face seen.
    Queue items: dict(saved=sample id, emotion=..., frame=...) or dict(error=message); a
    StorageError stops the recording.
    """

    def __init__(self, store, extractor_factory: Callable[[], Any], session_id: int, emotion: str,
                 condition: str, rate_hz: float = 2.0):
        self.store, self.extractor_factory = store, extractor_factory
        self.session_id, self.emotion, self.condition, self.rate_hz = session_id, emotion, condition, rate_hz
        self.recording = False
        self.results: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.saved = 0
        self.frames = 0
        self._extractor = None
        self._capture = threading.Event()
        self._last_save = 0.0

    def capture_one(self) -> None:
        self._capture.set()

    def recv(self, frame: av.VideoFrame) -> av.VideoFrame:
        bgr = frame.to_ndarray(format="bgr24")
        self.frames += 1
        try:
            if self._extractor is None:
                self._extractor = self.extractor_factory()
            faces = self._extractor.process(bgr, frame.time * 1000.0 if frame.time is not None else None)
        except (FerError, RuntimeError, ValueError) as e:
            put_dropping(self.results, {"error": f"{type(e).__name__}: {e}"})
            return frame
        now = time.monotonic()
        due = self.recording and now - self._last_save >= 1.0 / max(self.rate_hz, 0.01)
        if faces and (due or self._capture.is_set()):
            face = largest_face(faces)
            self._capture.clear()
            self._last_save = now
            try:
                sid = self.store.add_sample(
                    self.session_id, self.emotion, face.landmarks,
                    crop=studio_crop(self._extractor, bgr, face), pose=face.pose,
                    confidence=face.score, condition=self.condition, timestamp=time.time(),
                    frame_index=self.frames)
                self.saved += 1
                put_dropping(self.results, {"saved": sid, "emotion": self.emotion, "frame": self.frames})
            except StorageError as e:
                self.recording = False
                put_dropping(self.results, {"error": f"recording stopped: {e}"})
            except FerError as e:
                put_dropping(self.results, {"error": str(e)})
        out = draw_faces(bgr.copy(), faces)
        if self.recording:
            cv2.circle(out, (18, 18), 8, (0, 0, 255), -1)
            cv2.putText(out, f"REC {self.emotion}", (32, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2)
        return av.VideoFrame.from_ndarray(out, format="bgr24")

    def on_ended(self) -> None:
        if self._extractor is not None:
            self._extractor.close()
            self._extractor = None
