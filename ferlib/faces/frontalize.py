"""Turning a face in 3-D: back to face the camera (frontalisation), or away from it (synthetic turns).

The face mesh gives every point of the face in 3-D (`Face.landmarks`). `frontal_points` turns those
points about the head's vertical axis by minus its yaw (`ferlib.faces.normalize.head_pose`), keeping
pitch and roll: where each point would be seen if the head looked at the camera. `frontal_map` is the
piecewise-affine warp (a Delaunay triangulation of the frontal points) that moves every point there,
sampled on a crop's pixel grid; `ferlib.faces.crops.frontal_crop` frames and cuts the crop with it.
A ring of anchors beyond the crop, carried by the least-squares similarity between the two point
sets, keeps the hair and background continuous around the face. `turn_face` is the other way: the
synthetic turns the frontalisation is measured on (scripts/make_eval_sets.py) and trained with
(scripts/make_turned_train.py).

Measured through `ferlib predict` (docs/results.md, "Turned heads"): on real AffectNet faces turned
20-30 degrees the default reads 0.50 frontalised against 0.47 from its plain crop; on the synthetic
turns (scripts/make_eval_sets.py) frontalisation plus a model trained on such crops (the default's
`turned_expert`) lifts 30-45 degrees from 0.77x to 0.90x the frontal accuracy. Removing more than the
measured yaw (x1.2, x1.4) was worse.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ferlib.errors import InputError
from ferlib.faces.normalize import SUBSETS, head_pose, rotation_matrix

RING = 9
"""Anchors per side of the square ring around the crop (32 anchors)."""
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
"""MediaPipe's FACEMESH_FACE_OVAL points, in order round the face."""
WARP_POINTS = tuple(sorted(set(range(0, 468, 3)) | set(FACE_OVAL) | set(SUBSETS["default"])))
"""The mesh points that carry the warp: every third point, the face's outline, lips, eyes, irises and
brows. A 48 px crop needs no finer mesh, and half the points halve the triangulation's time."""


def frontal_points(landmarks: np.ndarray, pose: tuple[float, float, float] | None = None) -> tuple[np.ndarray, float]:
    """(points, yaw): the (N, 3) face-mesh points turned by minus the head's yaw about their centroid
    (pitch and roll kept), and that yaw in degrees. pose: the face's (yaw, pitch, roll) when known
    (`Face.pose`), else measured here."""
    if landmarks is None:
        raise InputError("frontal_points needs the face's landmarks, got None")
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
        raise InputError(f"frontal_points needs finite (N, 3) landmarks, got shape {pts.shape}")
    yaw, pitch, roll = head_pose(pts) if pose is None else pose
    turn = rotation_matrix(0.0, pitch, roll) @ rotation_matrix(yaw, pitch, roll).T
    c = pts.mean(axis=0)
    return c + (pts - c) @ turn.T, float(yaw)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, scale, shift) taking 2-D points src to dst."""
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[:n] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    a[n:] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    p, q, tx, ty = np.linalg.lstsq(a, np.r_[dst[:, 0], dst[:, 1]], rcond=None)[0]
    return np.array([[p, -q, tx], [q, p, ty]])


def frontal_map(landmarks: np.ndarray, front: np.ndarray, origin: tuple[float, float], side: float,
                size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of a size x size crop reads the frame: (map_x, map_y) float64 (size, size) in
    frame pixels (pixel centres at +0.5). The crop is the square of `side` frame pixels at `origin`
    (its top-left corner) in the coordinates of `front` = `frontal_points(landmarks)`."""
    pts = np.asarray(landmarks, dtype=np.float64)
    to_crop = size / side
    warp = np.asarray(WARP_POINTS)
    target = (front[warp, :2] - origin) * to_crop  # crop pixels (pixel centres at +0.5)
    ring = np.linspace(-0.5, size + 0.5, RING)
    edge = (ring[0], ring[-1])
    anchors = np.array([(u, v) for u in ring for v in ring if u in edge or v in edge])
    sim = _similarity(front[:, :2], pts[:, :2])
    source = np.r_[pts[warp, :2], (anchors / to_crop + origin) @ sim[:, :2].T + sim[:, 2]]
    tri = Delaunay(np.r_[target, anchors])
    gx, gy = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    q = np.c_[gx.ravel(), gy.ravel()]
    simplex = np.maximum(tri.find_simplex(q), 0)  # the ring covers every pixel centre
    tf = tri.transform[simplex]
    bary = np.einsum("nij,nj->ni", tf[:, :2], q - tf[:, 2])
    weights = np.c_[bary, 1 - bary.sum(axis=1)]
    where = np.einsum("ni,nij->nj", weights, source[tri.simplices[simplex]])
    return where[:, 0].reshape(size, size), where[:, 1].reshape(size, size)


def turn_face(bgr: np.ndarray, pts: np.ndarray, yaw: float) -> np.ndarray:
    """The image with its face turned by `yaw` degrees about the face's vertical axis: the face mesh's
    points `pts` (478, 3 pixels) are rotated in 3-D about their centroid and the face is re-drawn
    triangle by triangle (far triangles first) over its old region, inpainted first. Hair, ears and
    neck stay where they were, so it is a rough stand-in for a real turn: the synthetic turns of
    scripts/make_eval_sets.py, and the inverse of `frontal_crop`."""
    centre = pts.mean(axis=0)
    a = np.deg2rad(yaw)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    moved = (pts - centre) @ rot.T + centre
    tri = Delaunay(pts[:, :2]).simplices
    hull = cv2.convexHull(pts[:, :2].astype(np.int32))
    mask = np.zeros(bgr.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, (255,))
    out = cv2.inpaint(bgr, cv2.dilate(mask, np.ones((9, 9), np.uint8)), 5, cv2.INPAINT_TELEA)
    depth = moved[tri, 2].mean(axis=1)  # MediaPipe z: smaller is nearer the camera
    for t in tri[np.argsort(-depth)]:
        src, dst = pts[t, :2].astype(np.float32), moved[t, :2].astype(np.float32)
        if abs(np.cross(dst[1] - dst[0], dst[2] - dst[0])) < 1.0:
            continue  # seen edge-on
        x, y, w, h = cv2.boundingRect(dst)
        if w < 1 or h < 1:
            continue
        m = cv2.getAffineTransform(src, (dst - [x, y]).astype(np.float32))
        patch = cv2.warpAffine(bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        tmask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(tmask, (dst - [x, y]).astype(np.int32), (255,))
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, out.shape[1]), min(y + h, out.shape[0])
        if x1 <= x0 or y1 <= y0:
            continue
        sub = tmask[y0 - y:y1 - y, x0 - x:x1 - x] > 0
        out[y0:y1, x0:x1][sub] = patch[y0 - y:y1 - y, x0 - x:x1 - x][sub]
    return out
