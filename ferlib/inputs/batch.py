"""Building model inputs: landmarks and face crops -> tensors (`build_batch`), and `TensorSet`."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ferlib.errors import InputError
from ferlib.faces.features import DISTANCE_POINTS, pairwise_distances
from ferlib.faces.normalize import KEYPOINT_INDICES, SUBSETS, normalize
from ferlib.inputs.spec import PATCH_REGIONS, REGIONS, InputSpec


def _check_landmarks(landmarks_px) -> np.ndarray:
    if landmarks_px is None:
        raise InputError("these model inputs need landmarks_px, got None")
    a = np.asarray(landmarks_px, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (478, 3):
        raise InputError(f"landmarks_px must have shape (N, 478, 3), got {np.shape(landmarks_px)}")
    if not np.isfinite(a).all():
        raise InputError("landmarks_px contains NaN or infinite values")
    return a


def _check_crops(crops) -> np.ndarray:
    if crops is None:
        raise InputError("these model inputs need grey face crops, got None")
    a = np.asarray(crops)
    if a.ndim == 2:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 8:
        raise InputError(f"crops must be uint8 (N, S, S) grey squares, got {a.dtype} {a.shape}")
    return a


def _resize(crops: np.ndarray, size: int) -> np.ndarray:
    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


def render_heatmaps(points_xy, size: int = 48, sigma: float = 1.5, per_point: bool = False) -> np.ndarray:
    """Gaussian heatmaps of (N, K, 2) points in [0, 1] (x, y): (N, 1, size, size) summed and scaled
    to peak 1 per image, or (N, K, size, size) one per point. float32."""
    p = np.asarray(points_xy, dtype=np.float32)
    if p.ndim != 3 or p.shape[2] != 2:
        raise InputError(f"heatmap points must have shape (N, K, 2), got {p.shape}")
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    s = sigma / size
    gx = np.exp(-((grid[None, None, :] - p[:, :, 0:1]) ** 2) / (2 * s * s))  # (N, K, W)
    gy = np.exp(-((grid[None, None, :] - p[:, :, 1:2]) ** 2) / (2 * s * s))  # (N, K, H)
    if per_point:
        return (gy[:, :, :, None] * gx[:, :, None, :]).astype(np.float32)
    h = np.einsum("nkh,nkw->nhw", gy, gx)
    h /= np.maximum(h.max(axis=(1, 2), keepdims=True), 1e-6)
    return h[:, None].astype(np.float32)


def region_patches(crops: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, size, size) uint8: the eyes, brows and mouth REGIONS of each crop, resized."""
    n, s = crops.shape[0], crops.shape[1]
    out = np.empty((n, len(PATCH_REGIONS), size, size), np.uint8)
    for j, name in enumerate(PATCH_REGIONS):
        y0, y1, x0, x1 = (round(f * s) for f in REGIONS[name])
        for i in range(n):
            out[i, j] = cv2.resize(crops[i, y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def clarity_score(crops) -> np.ndarray:
    """Variance of the Laplacian of each grey crop (higher = sharper)."""
    c = _check_crops(crops)
    return np.array([cv2.Laplacian(x, cv2.CV_64F).var() for x in c], dtype=np.float64)


def clarity_stratum(crops, edges) -> np.ndarray:
    """Stratum index (N,) int64 of each crop: number of `edges` below its clarity score."""
    return np.digitize(clarity_score(crops), np.asarray(edges, dtype=np.float64)).astype(np.int64)


def keypoint_targets(landmarks_px, crop_size: int) -> np.ndarray:
    """(N, P, 2) crop-relative [0, 1] targets of the keypoint regressor from face mesh points given
    in the crop's pixel coordinates."""
    lm = _check_landmarks(landmarks_px)
    return (lm[:, list(KEYPOINT_INDICES.values()), :2] / float(crop_size)).astype(np.float32)


def build_batch(spec: InputSpec, landmarks_px=None, crops=None, stratum=None, baseline=None) -> dict[str, torch.Tensor]:
    """Model inputs for N faces.

    landmarks_px: (N, 478, 3) face mesh points in pixels. crops: (N, S, S) uint8 grey face crops.
    stratum: (N,) clarity strata (computed from crops when spec.clarity_edges is set).
    baseline: (478, 3) the person's neutral landmarks (pixels) when spec.subtract_baseline.
    Returns float32 tensors (int64 for "stratum") keyed as the model expects.
    """
    out: dict[str, torch.Tensor] = {}
    n = None
    if spec.needs_landmarks:
        lm = _check_landmarks(landmarks_px)
        n = lm.shape[0]
        norm = normalize(lm, spec.method).astype(np.float32)
        if "landmarks" in spec.keys:
            sub = norm[:, list(SUBSETS[spec.subset])]
            if spec.subtract_baseline:
                if baseline is None:
                    raise InputError("this model subtracts a neutral baseline: pass baseline=(478, 3) landmarks")
                base = normalize(_check_landmarks(baseline)[0], spec.method).astype(np.float32)
                sub = sub - base[list(SUBSETS[spec.subset])][None]
            out["landmarks"] = torch.from_numpy(np.ascontiguousarray(sub.transpose(0, 2, 1)))
        if "heatmaps" in spec.keys:
            pts = norm[:, list(SUBSETS[spec.heatmap_subset]), :2]
            out["heatmaps"] = torch.from_numpy(render_heatmaps(pts, spec.heatmap_size, spec.heatmap_sigma,
                                                               spec.heatmap_per_point))
        if "distances" in spec.keys:
            idx = spec.distance_indices or DISTANCE_POINTS
            out["distances"] = torch.from_numpy(np.asarray(pairwise_distances(norm, idx), dtype=np.float32))
    if spec.needs_crops:
        c = _check_crops(crops)
        if n is not None and c.shape[0] != n:
            raise InputError(f"got {n} landmark sets but {c.shape[0]} crops")
        n = c.shape[0]
        if "image" in spec.keys:
            img = _resize(c, spec.image_size).astype(np.float32) / 255.0
            out["image"] = torch.from_numpy((img[:, None] - spec.mean) / spec.std)
        if "patches" in spec.keys:
            p = region_patches(c, spec.patch_size).astype(np.float32) / 255.0
            out["patches"] = torch.from_numpy((p - spec.mean) / spec.std)
    if "stratum" in spec.keys:
        if stratum is None:
            if not spec.clarity_edges:
                raise InputError("the 'stratum' input needs stratum= or clarity_edges in the InputSpec")
            stratum = clarity_stratum(crops, spec.clarity_edges)
        s = np.asarray(stratum, dtype=np.int64).reshape(-1)
        if n is not None and s.shape[0] != n:
            raise InputError(f"got {s.shape[0]} strata for {n} faces")
        out["stratum"] = torch.from_numpy(s)
    return out


@dataclass
class TensorSet:
    """An in-memory dataset: equal-length tensors keyed like a batch, plus labels
    ((N,) int64 class indices, or (N, P, 2) float targets for the keypoint regressor), the
    InputSpec that built them (used for augmentation and test-time flips) and, for classifiers
    trained on label distributions, `targets`: (N, C) float soft targets (each row sums to 1;
    `labels` then holds each row's hard label, used for metrics)."""

    tensors: dict[str, torch.Tensor]
    labels: torch.Tensor
    spec: InputSpec | None = None
    targets: torch.Tensor | None = None

    def __post_init__(self):
        self.labels = torch.as_tensor(self.labels)
        n = len(self.labels)
        bad = {k: len(v) for k, v in self.tensors.items() if len(v) != n}
        if bad:
            raise InputError(f"TensorSet tensors must all have {n} rows (labels); got {bad}")
        if n == 0:
            raise InputError("TensorSet is empty")
        if self.targets is not None:
            t = torch.as_tensor(self.targets).float()
            if t.ndim != 2 or len(t) != n:
                raise InputError(f"TensorSet targets must have shape ({n}, C), got {tuple(t.shape)}")
            if not torch.isfinite(t).all() or (t < 0).any() or not torch.allclose(t.sum(1), torch.ones(n), atol=1e-4):
                raise InputError("TensorSet targets must be finite, >= 0 and sum to 1 per row")
            self.targets = t

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}

    def subset(self, idx) -> "TensorSet":
        idx = torch.as_tensor(idx)
        return TensorSet({k: v[idx] for k, v in self.tensors.items()}, self.labels[idx], self.spec,
                         None if self.targets is None else self.targets[idx])

    @classmethod
    def build(cls, spec: InputSpec, labels, landmarks_px=None, crops=None, stratum=None, baseline=None,
              chunk: int = 2048) -> "TensorSet":
        """build_batch over chunks of N faces and concatenate."""
        labels = torch.as_tensor(np.asarray(labels))
        n = len(labels)
        parts = []
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            parts.append(build_batch(spec, None if landmarks_px is None else landmarks_px[sl],
                                     None if crops is None else crops[sl],
                                     None if stratum is None else stratum[sl], baseline))
        return cls({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, labels, spec)
