"""Stable face ids across the frames of one stream: greedy one-to-one IoU matching of boxes."""
from __future__ import annotations

from ferlib.types import Face

TRACK_IOU = 0.3
TRACK_MAX_MISSES = 10


def iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def greedy_match(boxes_a, boxes_b, min_iou: float = TRACK_IOU) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU (highest first, >= min_iou): (index in a, index in b)."""
    pairs = sorted(((iou(a, b), ai, bi) for ai, a in enumerate(boxes_a) for bi, b in enumerate(boxes_b)),
                   reverse=True)
    used_a, used_b, out = set(), set(), []
    for v, ai, bi in pairs:
        if v < min_iou or ai in used_a or bi in used_b:
            continue
        out.append((ai, bi))
        used_a.add(ai)
        used_b.add(bi)
    return out


class FaceTracker:
    """Gives faces ids: in a stream, the id of the last frame's face it overlaps most (a track
    survives TRACK_MAX_MISSES frames unseen), new ids left to right; for stills (`still=True`),
    the faces' left-to-right order."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._tracks: list[tuple[int, tuple, int]] = []  # (face_id, box, frames since seen)
        self._next_id = 0

    def match(self, boxes) -> list[int | None]:
        """Track id of each box (None: no track), as `assign` would match them."""
        ids: list[int | None] = [None] * len(boxes)
        for fi, ti in greedy_match(boxes, [t[1] for t in self._tracks]):
            ids[fi] = self._tracks[ti][0]
        return ids

    def assign(self, faces: list[Face], still: bool = False) -> None:
        """Set each face's face_id and sort the list by it."""
        if still:
            faces.sort(key=lambda f: f.box[0])
            for i, f in enumerate(faces):
                f.face_id = i
            return
        used_f, used_t = set(), set()
        for fi, ti in greedy_match([f.box for f in faces], [t[1] for t in self._tracks]):
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
