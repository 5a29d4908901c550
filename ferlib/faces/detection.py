"""The face detection cascade: every face a BlazeFace detector can find.

1. full-range BlazeFace on the frame (faces small and large, up to about 5 m);
2. when it finds nothing, or the frame is small (longer side < SMALL_SIDE, e.g. FER2013's 48 px):
   short-range BlazeFace on the frame scaled to SMALL_UPSCALE px and padded with black
   (`upscale_pad`): it finds faces that fill the image (tight crops, aligned dataset images) and
   turned heads that the full-range model misses;
   then the same on a smoothed copy (3x3 Gaussian: dataset images' JPEG and halftone noise);
3. (in ferlib.faces.landmarks) for a still where both found nothing: the whole image, if a face mesh fits it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ferlib.errors import InputError
from ferlib.faces import graphs

SMALL_SIDE = 128
"""Images whose longer side is below this skip the full-range detector (FER2013 is 48)."""
SMALL_UPSCALE = 192
SMALL_PAD = 0.25
"""Short-range stage: scale the longer side to SMALL_UPSCALE px, then pad SMALL_PAD of that on each side
with black (on 400 FER2013 PrivateTest images: 95% found, against 89% with a replicated border)."""
RETRY_PADS = (0.1, 0.5)
"""Where the short-range stage finds nothing, it tries again with these pads: of the 169 FER2013
PrivateTest images where the whole cascade found no face, each finds 41 (2026-11-27)."""
SMOOTH_KERNEL = 3
"""Then the pads again on a copy smoothed by this Gaussian kernel: FER2013's JPEG and halftone noise,
upscaled, hides faces from BlazeFace. Of the 77 PrivateTest images `ferlib predict` still missed,
60 were found this way, against 0 false detections on 20 images and frames without a face
(../shared/media; 2026-11-27)."""


@dataclass
class Detection:
    """A face box (x0, y0, x1, y1) in the pixels of the image given to `detect`, the detector's
    score, and the cascade stage that found it: "full", "short" or "short-smoothed"."""

    box: tuple[float, float, float, float]
    score: float
    stage: str


@dataclass
class Scaled:
    """An image scaled by `scale` and shifted by (ox, oy): pixel p of the original is p * scale + o."""

    image: np.ndarray
    scale: float
    ox: float
    oy: float

    def back(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) points of `image` -> the original's pixels (z scaled like x)."""
        out = np.array(pts, dtype=np.float64, copy=True)
        out[:, :2] = (out[:, :2] - (self.ox, self.oy)) / self.scale
        out[:, 2] /= self.scale
        return out

    def back_box(self, box) -> tuple[float, float, float, float]:
        s, ox, oy = self.scale, self.ox, self.oy
        return ((box[0] - ox) / s, (box[1] - oy) / s, (box[2] - ox) / s, (box[3] - oy) / s)


def upscale_pad(bgr: np.ndarray, pad: float = SMALL_PAD) -> Scaled:
    """The short-range stage's input: longer side scaled to SMALL_UPSCALE, a black border of `pad`."""
    h, w = bgr.shape[:2]
    scale = SMALL_UPSCALE / max(h, w)
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    big = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    pad = round(SMALL_UPSCALE * pad)
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return Scaled(big, scale, float(pad), float(pad))


def clip_box(box, w: int, h: int) -> tuple[float, float, float, float]:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


class FaceDetector:
    """The cascade's two BlazeFace stages (module docstring). Owns its graphs; not thread-safe.

    `detect(bgr)`: boxes in `bgr`'s pixels, best score first, at most `max_faces`, scores below
    `min_face_score` dropped. `detect_small(bgr)`: the short-range stage alone, (the `upscale_pad`
    image it searched, boxes in its pixels), trying SMALL_PAD then RETRY_PADS until a face is found.
    `detect_scaled(scaled)`: one short-range pass on an image already made by `upscale_pad`.
    """

    def __init__(self, max_faces: int = 5, min_detection_confidence: float = 0.5, min_face_score: float = 0.0):
        if max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {max_faces}")
        self.max_faces, self.min_face_score = max_faces, min_face_score
        self._min_conf = min_detection_confidence
        self._full = graphs.face_detection(True, min_detection_confidence)
        self._short = None  # made on first use

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        h, w = bgr.shape[:2]
        if max(h, w) >= SMALL_SIDE:
            found = self._run(self._full, bgr, "full")
            if found:
                return found
        scaled, found = self.detect_small(bgr)
        return [Detection(clip_box(scaled.back_box(d.box), w, h), d.score, d.stage) for d in found]

    def detect_small(self, bgr: np.ndarray) -> tuple[Scaled, list[Detection]]:
        """At most one face: an image under SMALL_SIDE px is a face crop, and a second box in it is
        a false detection (51 of FER2013 PrivateTest's 3,589 images had one). Pads SMALL_PAD, then
        RETRY_PADS; then the same on a smoothed copy (SMOOTH_KERNEL), whose face is returned in the
        unsmoothed image of the same geometry (stage "short-smoothed")."""
        first = upscale_pad(bgr)
        for smoothed in (False, True):
            src = cv2.GaussianBlur(bgr, (SMOOTH_KERNEL, SMOOTH_KERNEL), 0) if smoothed else bgr
            for pad in (SMALL_PAD, *RETRY_PADS):
                scaled = first if pad == SMALL_PAD and not smoothed else upscale_pad(src, pad)
                found = self.detect_scaled(scaled)[:1]
                if found and smoothed:
                    return upscale_pad(bgr, pad), [replace(d, stage="short-smoothed") for d in found]
                if found:
                    return scaled, found
        return first, []

    def detect_scaled(self, scaled: Scaled) -> list[Detection]:
        if self._short is None:
            self._short = graphs.face_detection(False, self._min_conf)
        return self._run(self._short, scaled.image, "short")

    def _run(self, graph, bgr, stage: str) -> list[Detection]:
        h, w = bgr.shape[:2]
        dets = []
        for d in graphs.protos(graphs.run(graph, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), "detections"):
            score = float(d.score[0])
            if score < self.min_face_score:
                continue
            rb = d.location_data.relative_bounding_box
            x0, y0 = rb.xmin * w, rb.ymin * h
            dets.append(Detection((x0, y0, x0 + rb.width * w, y0 + rb.height * h), score, stage))
        dets.sort(key=lambda d: -d.score)
        return dets[: self.max_faces]

    def close(self) -> None:
        for g in (self._full, self._short):
            if g is not None:
                g.close()
        self._full = self._short = None
