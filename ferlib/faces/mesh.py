"""MediaPipe face mesh: 478 refined points of a face, in the pixels of the frame it was found in.

`FaceMesher.mesh_box` meshes the face in a detector box (a square crop around it),
`mesh_image` the one face filling an image, `track` follows faces over a video's frames with a
full-frame tracking mesh. Owns its graphs; not thread-safe.
"""
from __future__ import annotations

import cv2
import numpy as np

from ferlib.faces import graphs
from ferlib.faces.crops import square_crop

CROP_MARGIN = 0.6
"""Square mesh crop side = (1 + CROP_MARGIN) * the longer side of the detector box."""
MESH_INPUT = 256
"""Side in pixels that every crop is resized to before meshing."""


class FaceMesher:
    def __init__(self, min_detection_confidence: float = 0.5):
        self._min_conf = min_detection_confidence
        self._static = graphs.face_mesh(True, 1, min_detection_confidence)
        # full-frame tracking meshes by max_num_faces: a mesh asked for more faces than it tracks
        # runs its own detector on every frame (+1 ms)
        self._trackers: dict = {}
        self._active: int | None = None  # tracker in use; any other is reset before use

    def mesh_box(self, bgr: np.ndarray, box) -> np.ndarray | None:
        """Points of the face in a detector box (in `bgr`'s pixels), or None."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        longer = max(box[2] - box[0], box[3] - box[1])
        crop, x0, y0 = square_crop(bgr, cx, cy, (1 + CROP_MARGIN) * longer)
        pts = self.mesh_image(crop)
        if pts is not None:
            pts[:, 0] += x0
            pts[:, 1] += y0
        return pts

    def mesh_image(self, bgr: np.ndarray) -> np.ndarray | None:
        """Points of the one face in `bgr` (its pixels, z scaled like x), or None."""
        h, w = bgr.shape[:2]
        s = MESH_INPUT / max(h, w)
        img = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        found = graphs.landmark_lists(graphs.run(self._static, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
        if not found:
            return None
        ih, iw = img.shape[:2]
        return pixel_points(found[0], iw, ih) / s

    def track(self, bgr: np.ndarray, k: int) -> list[np.ndarray]:
        """Points of up to k faces the full-frame tracking mesh follows (reset when another k was
        used last, or after `reset_tracking`)."""
        h, w = bgr.shape[:2]
        found = graphs.landmark_lists(graphs.run(self._tracker(k), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        return [pixel_points(raw, w, h) for raw in found]

    def reset_tracking(self) -> None:
        self._active = None

    def _tracker(self, k: int):
        if self._active != k or k not in self._trackers:
            if k in self._trackers:
                graphs.restart(self._trackers[k])
            else:
                self._trackers[k] = graphs.face_mesh(False, k, self._min_conf)
            self._active = k
        return self._trackers[k]

    def close(self) -> None:
        for g in (self._static, *self._trackers.values()):
            if g is not None:
                g.close()
        self._static, self._trackers, self._active = None, {}, None


# A serialised NormalizedLandmarkList: per landmark field 1 (length 15) holding fields 1-3 (x, y, z) as float32.
_landmark_record = np.dtype([("tag", "u1"), ("len", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"),
                             ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])
_landmark_tags = {"tag": 0x0A, "len": 15, "tx": 0x0D, "ty": 0x15, "tz": 0x1D}
_TAG_COLUMNS = np.array([_landmark_record.fields[k][1] for k in _landmark_tags])  # type: ignore[index]  # byte offsets
_TAG_VALUES = np.array(list(_landmark_tags.values()), np.uint8)


def pixel_points(landmark_list, w: int, h: int) -> np.ndarray:
    """(N, 3) float64 (x * w, y * h, z * w) of a NormalizedLandmarkList, serialised (bytes, as
    `graphs.landmark_lists` gives them) or a message. The serialised form is read directly when every
    landmark holds just x, y, z (as the face mesh sends them): 0.02 instead of 0.2 ms."""
    if isinstance(landmark_list, bytes):
        raw = landmark_list
        if raw and len(raw) % _landmark_record.itemsize == 0:
            tags = np.frombuffer(raw, np.uint8).reshape(-1, _landmark_record.itemsize)[:, _TAG_COLUMNS]
            if (tags == _TAG_VALUES).all():
                a = np.frombuffer(raw, _landmark_record)
                return np.stack([a["x"], a["y"], a["z"]], axis=1).astype(np.float64) * (w, h, w)
        landmark_list = _landmark_list_type().FromString(raw)
    else:
        return pixel_points(landmark_list.SerializeToString(), w, h)
    return np.array([(q.x * w, q.y * h, q.z * w) for q in landmark_list.landmark], dtype=np.float64)


def _landmark_list_type():
    from mediapipe.framework.formats import landmark_pb2

    return landmark_pb2.NormalizedLandmarkList
