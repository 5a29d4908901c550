"""The one inference pipeline: frame -> faces (MediaPipe) -> model inputs -> probabilities.

The same `Pipeline` serves the CLI (`python -m ferlib predict`), the Live page, the Studio and
evaluation, so a face is prepared identically everywhere (through `ferlib.inputs.build_batch`).
A Pipeline owns one MediaPipe graph: use one per stream / thread (the graphs are not thread-safe).
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from contextlib import closing
from pathlib import Path
from typing import Generator, Iterable, Iterator, Sequence, cast

import numpy as np
import torch

from ferlib.errors import InputError, ModelFileError
from ferlib.faces.crops import model_crop, turned
from ferlib.faces.landmarks import LandmarkExtractor, face_pose
from ferlib.inference.checkpoint import MODELS_DIR, card_tta_flip, existing_checkpoint
from ferlib.inference.keypoints import load_realigner
from ferlib.inference.runtime import BACKENDS, DEFAULT_BACKEND, DEFAULT_THREADS, Runner, load_runner
from ferlib.inputs import InputSpec, Mirror, build_batch
from ferlib.io import ensure_bgr, prefetch
from ferlib.types import Face, FrameResult, Prediction, face_landmarks

# Shipped models in order of preference for the default: the one that reads every emotion best on the
# held-out sets at once, per class (docs/results.md, 2026-12-06: resnet18_attention_ferplus_w32, eight
# classes, the width-16 default widened and fine-tuned), whose whole pipeline holds 30 fps on one core
# (benchmarks/2026-12-06-live-w32.md), then the width-16 one it grew from, the FER2013-only ResNet, then the
# fast landmark path.
DEFAULT_MODELS = ("resnet18_attention_ferplus_w32", "resnet18_attention_ferplus", "resnet18_attention_fer2013_long",
                  "landmark_cnn1d_fer2013_affectnet", "landmark_cnn1d_fer2013", "image_cnn_fer2013")
SMOOTHING = ("none", "ema", "vote")
DEFAULT_SMOOTHING = "ema"
DEFAULT_SMOOTHING_ALPHA = 0.1
"""Smoothing of videos in `predict` and on the Live page: chosen on the committed clip by
scripts/eval_smoothing.py (docs/results.md, "Reading every emotion"): the least lag at <= 0.5 label flips
per second for the default model (resnet18_attention_ferplus_w32: EMA 0.1, 0.31 flips/s, 0.29 s; 0.15
gave 0.51 flips/s between sad and its neighbours while the person cries)."""


FLIP_MAX_FACES = 2
"""Flip averaging (a card's `tta_flip`) costs a second model pass per face; it runs for the faces of a frame
that holds at most this many, and a bigger group's faces are read once, so Live keeps the camera's rate
for five faces with the width-32 default (benchmarks/2026-12-06-browser-five-faces-w32.md; without flip
averaging that model reads FER+ Test as the width-16 model does with it: docs/results.md). `predict` and
Live follow the same rule, so both give a frame the same answer."""
FRONTAL_MAX_FACES = 2
"""A frontalising Pipeline (the default model's: `Pipeline(frontalize=...)`) reads the turned faces of a
frame that holds at most this many faces frontalised (ferlib.faces.crops.frontal_crop: the face turned
to face the camera with its face mesh, docs/results.md "Turned heads"); that costs a face mesh per face
(4-9 ms), so a bigger group's faces are cropped from their detector boxes as they are. `predict` and
Live follow the same rule."""

STREAM_AHEAD = 4
"""`Pipeline.stream`: frames whose faces may be found ahead of the one being classified."""

KEYPOINT_MODEL = "keypoint_regressor_fer2013"  # the shipped keypoint regressor (ferlib.faces.realign)


def _is_keypoint_card(path: Path) -> bool:
    try:
        return "keypoints" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def shipped_models() -> list[Path]:
    """Card paths of the emotion classifiers shipped in models/ (sorted by name); the keypoint
    regressor is not one (`shipped_keypoint_model`)."""
    return sorted(p for p in MODELS_DIR.glob("*.json")
                  if existing_checkpoint(p) is not None and not _is_keypoint_card(p))


def shipped_keypoint_model() -> Path | None:
    """Card path of the shipped keypoint regressor, or None when it is absent."""
    return existing_checkpoint(MODELS_DIR / KEYPOINT_MODEL)


def default_model_path() -> Path:
    """$FERLIB_MODEL if set, else the first shipped default model that exists."""
    env = os.environ.get("FERLIB_MODEL")
    if env:
        return Path(env)
    for stem in DEFAULT_MODELS:
        c = existing_checkpoint(MODELS_DIR / stem)
        if c is not None:
            return c
    raise ModelFileError(f"no default model found in {MODELS_DIR} (expected one of {DEFAULT_MODELS})")


FALLBACK_MODEL = "resnet18_attention_fer2013_long"
"""The shipped image model that classifies faces face mesh cannot read, for landmark models."""


def turned_expert_of(card: dict) -> Path | None:
    """Card path of the shipped model a card names as its `turned_expert`, or None: the image model that
    reads the faces it would frontalise (`ferlib.faces.crops.turned`), trained on such faces. Only an
    image-only model (`InputSpec.box_framed`) frontalises, so the others have none."""
    name = card.get("turned_expert")
    if not name or "input" not in card or not InputSpec.from_dict(card["input"]).box_framed:
        return None
    if not isinstance(name, str) or Path(name).name != name:
        raise ModelFileError(f"card's turned_expert must be a shipped model's name, got {name!r}")
    return existing_checkpoint(MODELS_DIR / name)


def shipped_fallback_model() -> Path | None:
    """Card path of the shipped FALLBACK_MODEL, or None when it is absent."""
    return existing_checkpoint(MODELS_DIR / FALLBACK_MODEL)


class _NoExtractor:
    """The extractor of a fallback or turned-face pipeline: it classifies faces another pipeline found
    (box first, as an image model's pipeline finds them)."""

    mesh = False

    def process(self, *a, **k):
        raise InputError("a fallback pipeline has no extractor of its own")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def _set_poses(faces: list[Face]) -> float:
    """Fill in each face's `pose` from its landmarks; the time it took (ms)."""
    t0 = time.perf_counter()
    for f in faces:
        f.pose = face_pose(f.landmarks)
    return (time.perf_counter() - t0) * 1e3


def _faces_of(frames: list[tuple[np.ndarray, list[Face]]]) -> list[Face]:
    return [f for _, faces in frames for f in faces]


class Smoother:
    """Temporal smoothing of one face's probabilities.

    "ema": exponential moving average with weight `alpha` on the new frame. "vote": the source
    design's best prediction over a batch of frames - the mean of the last `window` frames'
    probabilities (its arg-max is the window's vote, weighted by confidence).
    """

    def __init__(self, kind: str = "none", alpha: float = DEFAULT_SMOOTHING_ALPHA, window: int = 8):
        if kind not in SMOOTHING:
            raise InputError(f"smoothing must be one of {SMOOTHING}, got {kind!r}")
        if not 0.0 < alpha <= 1.0 or window < 1:
            raise InputError(f"bad smoothing settings alpha={alpha}, window={window}")
        self.kind, self.alpha, self.window = kind, alpha, window
        self._ema: dict[int, np.ndarray] = {}  # face_id -> smoothed probabilities ("ema")
        self._windows: dict[int, deque] = {}  # face_id -> its last `window` probabilities ("mean")

    def __call__(self, face_id: int, probs: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return probs
        if self.kind == "ema":
            prev = self._ema.get(face_id)
            out = probs if prev is None else self.alpha * probs + (1 - self.alpha) * prev
            self._ema[face_id] = out
            return out
        q = self._windows.setdefault(face_id, deque(maxlen=self.window))
        q.append(probs)
        return np.mean(q, axis=0)

    def reset(self) -> None:
        self._ema.clear()
        self._windows.clear()


class Pipeline:
    """Faces and emotion probabilities for frames.

    model: a checkpoint path (stem, .json or .safetensors) or shipped name, an exported .onnx /
    TorchScript file, a `(model, card)` pair, a ferlib.inference.runtime Runner, or None for the default
    model. extractor: a LandmarkExtractor (one is made in `mode` if None).
    backend, threads: the model's runner (`ferlib.inference.runtime.load_runner`): "auto" (the default) runs
    it under ONNX Runtime (exported in memory; every family's export is checked in the tests; faster on
    CPU) where the model exports, else PyTorch; `self.backend` says which. threads: the runner's
    intra-op threads (default 1: MediaPipe's graphs run their own threads on the same cores).
    keypoint_model: a keypoint_regressor checkpoint for the made extractor's keypoint-aligned retry
    of faces face mesh misses (ferlib.faces.realign).
    mesh: run face mesh on every face (None: only when the model needs landmarks; image models
    classify the crop of the detector box, box -> crop -> model).
    fallback_model: for a model that needs landmarks, the image model that classifies the faces
    face mesh cannot read ("auto": the shipped FALLBACK_MODEL when it is there; None: such faces get
    no prediction). Its probabilities are mapped onto the model's classes by name (renormalised).
    tta_flip: average each face's probabilities with its mirror image's (None: when the model was
    trained and measured with it, its card's `tta_flip`), for the faces of frames that hold at most
    flip_max_faces faces (FLIP_MAX_FACES; None: every frame).
    frontalize: an image model reads the faces of frames that hold at most frontal_max_faces faces
    (FRONTAL_MAX_FACES; None: every frame) with `model_crop(frontal=True)`: a face turned
    FRONTAL_MIN_YAW or more frontalised from its face mesh, the others framed on their detector box
    (the made extractor meshes those frames' boxes; a given extractor must find faces box first,
    mesh=False, or nothing is frontalised). None (default): when the card names a `turned_expert`
    (the model was measured that way; a personal model, trained on plain crops, is not); False:
    plain crops. turned_model: the image model that reads the faces this one would frontalise, with
    the same classes ("auto": the card's `turned_expert`, trained on frontalised turned faces; None:
    this model reads them too).
    Each Prediction says which path produced it (`path`: mesh | box) and which model (`model`).
    """

    def __init__(self, model=None, extractor: LandmarkExtractor | None = None, smoothing: str = "none",
                 mode: str = "video", max_faces: int = 5, min_face_score: float = 0.0,
                 smoothing_alpha: float = DEFAULT_SMOOTHING_ALPHA, smoothing_window: int = 8,
                 backend: str = DEFAULT_BACKEND,
                 keypoint_model=None, mesh: bool | None = None, fallback_model="auto", tta_flip: bool | None = None,
                 threads: int = DEFAULT_THREADS, flip_max_faces: int | None = FLIP_MAX_FACES,
                 frontalize: bool | None = None, frontal_max_faces: int | None = FRONTAL_MAX_FACES,
                 turned_model="auto"):
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
        for name, limit in (("flip_max_faces", flip_max_faces), ("frontal_max_faces", frontal_max_faces)):
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise InputError(f"{name} must be a whole number >= 0 or None, got {limit!r}")
        self.runner: Runner = load_runner(default_model_path() if model is None else model, backend, threads)
        if self.runner.card is None or "classes" not in self.runner.card or "input" not in self.runner.card:
            raise ModelFileError(f"{self.runner.name}: no model card with classes and input spec; "
                                 "export it from a checkpoint (`ferlib export`) to keep its card")
        if self.runner.task != "classification":
            raise InputError(f"{self.runner.name}: a {self.runner.task} model, not an emotion classifier")
        self.model = self.runner  # the name older callers use
        self.model_path: Path | None = self.runner.path
        self.card: dict = self.runner.card
        self.classes: tuple[str, ...] = tuple(self.card["classes"])
        self.spec: InputSpec = self.runner.spec or InputSpec.from_dict(self.card["input"])
        self.backend: str = self.runner.backend
        if tta_flip is None:  # as the card's figures were measured
            tta_flip = card_tta_flip(self.card)
        self._mirror = Mirror(self.spec) if tta_flip else None
        self.flip_max_faces = flip_max_faces
        self.name = self.card.get("name") or (self.model_path.stem if self.model_path else self.card["model"]["name"])
        self.needs_mesh = self.spec.needs_landmarks or self.spec.subtract_baseline
        mesh = self.needs_mesh if mesh is None else bool(mesh)
        # frontalised crops are for image models (a hybrid model's heatmaps follow the plain crop) whose
        # faces are found box first: the others are framed on the detector box, as without it
        image_model = self.spec.box_framed
        if frontalize is None:
            frontalize = bool(self.card.get("turned_expert"))
        mesh_max = (0 if not (frontalize and image_model) else
                    max_faces if frontal_max_faces is None else frontal_max_faces)
        self.extractor = extractor or LandmarkExtractor(mode=mode, max_faces=max_faces, min_face_score=min_face_score,
                                                        mesh=mesh, mesh_max_faces=mesh_max)
        self.frontalize = bool(frontalize) and image_model and not getattr(self.extractor, "mesh", True)
        self.frontal_max_faces = frontal_max_faces
        self.turned: Pipeline | None = None
        if self.frontalize:
            self._set_turned(turned_model, backend, threads)
        if extractor is None:
            self.set_keypoint_model(keypoint_model)
        self.smoother = Smoother(smoothing, smoothing_alpha, smoothing_window)
        self.overlay_mesh = False
        self.baseline: np.ndarray | None = None
        self.fallback: Pipeline | None = None
        self._fallback_index: np.ndarray | None = None
        if self.needs_mesh:
            self._set_fallback(fallback_model, backend, threads)

    def set_keypoint_model(self, path) -> None:
        """Turn the extractor's keypoint-aligned retry of missed faces on (a keypoint_regressor
        checkpoint, ferlib.faces.realign) or off (None). The same checkpoint again is a no-op."""
        if path is None:
            self.extractor.set_realigner(None)
        elif self.extractor.keypoint_model != str(path):
            self.extractor.set_realigner(load_realigner(path))

    def _set_fallback(self, fallback_model, backend: str, threads: int) -> None:
        """The image model for faces without landmarks, and where its classes go in ours."""
        if isinstance(fallback_model, str) and fallback_model == "auto":
            fallback_model = shipped_fallback_model()
        if fallback_model is None:
            return
        no_extractor = cast(LandmarkExtractor, _NoExtractor())  # never asked for faces: it gets them
        fb = Pipeline(fallback_model, extractor=no_extractor, backend=backend, fallback_model=None, threads=threads)
        if fb.needs_mesh:
            raise InputError(f"fallback model {fb.name} needs landmarks: it must be an image model")
        ours = {c: i for i, c in enumerate(self.classes)}
        index = np.array([ours.get(c, -1) for c in fb.classes])
        if (index >= 0).any():
            self.fallback, self._fallback_index = fb, index

    def _set_turned(self, turned_model, backend: str, threads: int) -> None:
        """The image model for the faces this one would frontalise ("auto": the card's turned_expert)."""
        if isinstance(turned_model, str) and turned_model == "auto":
            turned_model = turned_expert_of(self.card)
        if turned_model is None:
            return
        no_extractor = cast(LandmarkExtractor, _NoExtractor())
        expert = Pipeline(turned_model, extractor=no_extractor, backend=backend, fallback_model=None, threads=threads,
                          frontal_max_faces=self.frontal_max_faces, flip_max_faces=self.flip_max_faces,
                          frontalize=True, turned_model=None)
        if expert.classes != self.classes or not expert.frontalize:
            raise ModelFileError(f"turned-face model {expert.name} must be an image model with the classes of "
                                 f"{self.name} {self.classes}, got {expert.classes}")
        self.turned = expert

    # -- configuration ---------------------------------------------------------------------------
    def set_smoothing(self, kind: str, alpha: float = DEFAULT_SMOOTHING_ALPHA, window: int = 8) -> None:
        self.smoother = Smoother(kind, alpha, window)

    def set_overlay_mesh(self, on: bool) -> None:
        """Landmarks on every face, to draw (the Live page's face-mesh overlay). A model that reads
        landmarks has them anyway. An image model's faces are meshed after it has read them, so the
        overlay never changes what the model sees: its input stays `predict`'s (detector-box crops)."""
        self.overlay_mesh = bool(on) and not self.extractor.mesh

    def set_neutral_baseline(self, landmarks_px: np.ndarray | None) -> None:
        """The person's neutral face (478, 3) pixels, subtracted by models trained with it."""
        self.baseline = None if landmarks_px is None else face_landmarks(landmarks_px, "neutral baseline")

    def reset(self) -> None:
        """A new stream or source begins: forget face tracks and smoothing state."""
        self.extractor.reset()
        self.smoother.reset()

    # -- inference -------------------------------------------------------------------------------
    def inputs_for(self, bgr: np.ndarray, faces: list[Face], frontal: bool = False) -> dict[str, torch.Tensor]:
        """The model's input batch for these faces of this frame; `frontal`: crop the faces that
        have landmarks frontalised (ferlib.faces.crops.model_crop)."""
        lm = None
        if self.spec.needs_landmarks:
            points = [f.landmarks for f in faces if f.landmarks is not None]
            if len(points) < len(faces):
                raise InputError(f"{self.name} needs landmarks: a face without them (path 'box') cannot go in")
            lm = np.stack(points)
        crops = (np.stack([model_crop(bgr, f, size=self.spec.image_size, frontal=frontal, on_box=self.spec.box_framed)
                           for f in faces])
                 if self.spec.needs_crops else None)
        base = self.baseline if self.spec.subtract_baseline else None
        if self.spec.subtract_baseline and base is None:
            raise InputError("this model needs a neutral baseline: calibrate neutral first")
        return build_batch(self.spec, landmarks_px=lm, crops=crops, baseline=base)

    def probabilities(self, batch: dict[str, torch.Tensor], flip: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities of a built batch; with flip TTA, the rows `flip` marks (default: all)
        averaged with their mirrored faces' (one runner call on the batch and those mirrors)."""
        n = len(next(iter(batch.values())))
        rows = np.arange(n) if flip is None else np.flatnonzero(flip)
        if self._mirror is None or not len(rows):
            return self.runner(batch)
        flipped = self._mirror({k: v[torch.as_tensor(rows)] for k, v in batch.items()})
        probs = self.runner({k: torch.cat([v, flipped[k]]) for k, v in batch.items()})
        out = probs[:n].copy()
        out[rows] = (out[rows] + probs[n:]) / 2
        return out

    def predict_faces(self, bgr: np.ndarray, faces: list[Face], timings: dict | None = None) -> list[Prediction]:
        """Predictions for already-detected faces (smoothing applied per face_id). A model that needs
        landmarks gets the faces that have them; the others go to the fallback image model (and get
        no prediction without one)."""
        return self.predict_frames([(bgr, faces)], timings)[0]

    def predict_frames(self, frames: Sequence[tuple[np.ndarray, list[Face]]],
                       timings: dict | None = None) -> list[list[Prediction]]:
        """`predict_faces` for several (frame, faces) at once, in one model call for all their faces
        (and one of the fallback's): the predictions of each frame, in order. `timings` gets the
        prepare and model times (ms) of the whole call."""
        if not any(faces for _, faces in frames):
            return [[] for _ in frames]
        t = {"prepare": 0.0, "model": 0.0}
        expert = self.turned
        # the faces this model would frontalise go to its turned-face expert
        sent = {id(f) for _, faces in frames if expert is not None and self._within(self.frontal_max_faces, faces)
                for f in faces if turned(f)}
        ours = [(bgr, [f for f in faces if (f.landmarks is not None or not self.needs_mesh) and id(f) not in sent])
                for bgr, faces in frames]
        aside = [(bgr, [f for f in faces if id(f) in sent]) for bgr, faces in frames]
        rest = [(bgr, [f for f in faces if f.landmarks is None and self.needs_mesh and self.fallback is not None])
                for bgr, faces in frames]
        probs: dict[int, tuple[np.ndarray, str]] = {}
        if any(fs for _, fs in ours):
            probs.update((id(f), (p, self.name)) for f, p in zip(_faces_of(ours), self._classify(ours, t)))
        if expert is not None and sent:
            probs.update((id(f), (p, expert.name)) for f, p in zip(_faces_of(aside), expert._classify(aside, t)))
        fallback, index = self.fallback, self._fallback_index
        if any(fs for _, fs in rest) and fallback is not None and index is not None:  # none without a fallback
            fb = fallback._classify(rest, t)
            mapped = np.zeros((len(fb), len(self.classes)), np.float32)
            keep = index >= 0
            mapped[:, index[keep]] = fb[:, keep]
            mapped /= np.clip(mapped.sum(axis=1, keepdims=True), 1e-12, None)
            probs.update((id(f), (p, fallback.name)) for f, p in zip(_faces_of(rest), mapped))
        if timings is not None:
            timings.update(t)
        return [[Prediction(face=f, probs=self.smoother(f.face_id, probs[id(f)][0]), classes=self.classes,
                            model=probs[id(f)][1]) for f in faces if id(f) in probs] for _, faces in frames]

    @staticmethod
    def _within(limit: int | None, faces: list[Face]) -> bool:
        """Whether a frame holding `faces` is small enough for a per-frame rule (FLIP_MAX_FACES, FRONTAL_MAX_FACES)."""
        return limit is None or len(faces) <= limit

    def _classify(self, frames: list[tuple[np.ndarray, list[Face]]], t: dict) -> np.ndarray:
        """This pipeline's model's probabilities for the faces of the frames (one model call, faces in
        frame order); adds the times to t (ms)."""
        t0 = time.perf_counter()
        parts = [self.inputs_for(bgr, faces, frontal=self.frontalize and self._within(self.frontal_max_faces, faces))
                 for bgr, faces in frames if faces]
        batch = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        flip = np.concatenate([np.full(len(faces), self._within(self.flip_max_faces, faces)) for _, faces in frames])
        t1 = time.perf_counter()
        probs = self.probabilities(batch, flip)
        t["prepare"] += (t1 - t0) * 1e3
        t["model"] += (time.perf_counter() - t1) * 1e3
        return probs

    def process(self, bgr: np.ndarray, timestamp_ms: float | None = None, frame_index: int = 0) -> FrameResult:
        """Detect every face in a BGR frame and classify it; an empty result means no face."""
        bgr, faces, landmarks_ms = self._extract(bgr, timestamp_ms)
        return self._result(bgr, faces, landmarks_ms, frame_index)

    def stream(self, frames: Iterable[tuple[int, float | None, np.ndarray]]) -> Generator[FrameResult, None, None]:
        """`process` of every (frame_index, timestamp_ms, bgr) of a video, in order, with the faces of
        the next frames found in a background thread (up to STREAM_AHEAD ahead) while this one's are
        classified: the extractor and the model run on both cores, so a video goes through faster
        than frame by frame (same results). The extractor is used only by that thread until the
        returned generator ends or is closed; close it (or run it out) before `reset`."""
        def faces_of() -> Iterator[tuple[int, np.ndarray, list[Face], float]]:
            try:
                for idx, ts, bgr in frames:
                    bgr, faces, ms = self._extract(bgr, ts, pose=False)  # head pose: below, in this thread
                    yield idx, bgr, faces, ms
            finally:
                close = getattr(frames, "close", None)
                if close is not None:  # e.g. a decoding thread (ferlib.io.prefetch)
                    close()

        with closing(prefetch(faces_of(), depth=STREAM_AHEAD)) as ahead:
            for idx, bgr, faces, ms in ahead:
                # a frontalising model's crop rule reads the pose (ferlib.faces.crops.turned); for the
                # others it comes after the model's input: its 13-point fit is the pose's (ferlib.faces.normalize)
                t = _set_poses(faces) if self.frontalize else 0.0
                result = self._result(bgr, faces, ms, idx)
                t += 0.0 if self.frontalize else _set_poses(faces)
                result.timings_ms["landmarks"] += t
                result.timings_ms["total"] += t
                yield result

    def _extract(self, bgr: np.ndarray, timestamp_ms: float | None,
                 pose: bool = True) -> tuple[np.ndarray, list[Face], float]:
        bgr = ensure_bgr(bgr, name="frame")
        t0 = time.perf_counter()
        faces = self.extractor.process(bgr, timestamp_ms, pose=pose)
        return bgr, faces, (time.perf_counter() - t0) * 1e3

    def _result(self, bgr: np.ndarray, faces: list[Face], landmarks_ms: float, frame_index: int) -> FrameResult:
        """The frame's FrameResult: its faces classified; timings (ms) of the faces, the model inputs,
        the model call and their total."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {"landmarks": landmarks_ms}
        preds = self.predict_faces(bgr, faces, timings)
        if self.overlay_mesh:  # after the model: the overlay's landmarks are for drawing only
            t1 = time.perf_counter()
            self.extractor.mesh_faces(bgr, faces)
            timings["overlay_mesh"] = (time.perf_counter() - t1) * 1e3
        timings["total"] = landmarks_ms + (time.perf_counter() - t0) * 1e3
        return FrameResult(predictions=preds, timings_ms=timings, frame_index=frame_index)

    def close(self) -> None:
        self.extractor.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
