"""Model inputs: the one place where landmarks and face crops become tensors.

`build_batch(spec, landmarks_px, crops, stratum)` is used by training, evaluation and the live
pipeline alike, so a model sees identical inputs everywhere. `InputSpec` (stored in every model
card) says what to build; `Augmenter` applies training-time augmentation to built batches;
`TensorSet` is the in-memory dataset that train/evaluate consume.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ferlib.errors import InputError
from ferlib.features import DISTANCE_POINTS, pairwise_distances
from ferlib.models.keypoints import KEYPOINT_INDICES
from ferlib.normalize import SUBSETS, mirror_permutation, normalize

KINDS = ("landmarks", "image", "hybrid", "distances")
KEYS = ("landmarks", "image", "heatmaps", "patches", "distances", "stratum")
# Face regions as fractions (y0, y1, x0, x1) of an aligned square face crop (FER2013-style framing):
# the patches of hybrid_heatmap and the masks of the occlusion test.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "eyes": (0.22, 0.50, 0.08, 0.92),
    "brows": (0.10, 0.32, 0.08, 0.92),
    "mouth": (0.62, 0.92, 0.20, 0.80),
}
PATCH_REGIONS = ("eyes", "brows", "mouth")
_DEFAULT_KEYS = {"landmarks": ("landmarks",), "image": ("image",), "hybrid": ("image", "landmarks"),
                 "distances": ("distances",)}


@dataclass
class InputSpec:
    """What `build_batch` makes for a model.

    kind: landmarks | image | hybrid | distances. keys: batch keys to build (default by kind).
    method/subset: landmark normalisation (ferlib.normalize) and index subset for "landmarks".
    image_size, mean, std: crops are resized to image_size^2 and scaled (x/255 - mean) / std.
    heatmap_*: Gaussian heatmaps of the normalised heatmap_subset points, summed into one channel
    or one per point. patch_size: eye/brow/mouth patches (REGIONS) for "patches".
    distance_indices: landmark indices for "distances" (empty = ferlib.features.DISTANCE_POINTS).
    clarity_edges: Laplacian-variance thresholds giving the "stratum" key (len+1 strata).
    subtract_baseline: subtract the person's normalised neutral landmarks (subject conditioning).
    """

    kind: str = "landmarks"
    keys: tuple[str, ...] = ()
    method: str = "proposed"
    subset: str = "default"
    image_size: int = 48
    mean: float = 0.5
    std: float = 0.25
    heatmap_size: int = 48
    heatmap_sigma: float = 1.5
    heatmap_per_point: bool = False
    heatmap_subset: str = "default"
    patch_size: int = 24
    distance_indices: tuple[int, ...] = ()
    clarity_edges: tuple[float, ...] = ()
    subtract_baseline: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"input kind {self.kind!r} is not one of {KINDS}")
        self.keys = tuple(self.keys) or _DEFAULT_KEYS[self.kind]
        bad = [k for k in self.keys if k not in KEYS]
        if bad:
            raise InputError(f"unknown input keys {bad}; known: {KEYS}")
        self.distance_indices = tuple(int(i) for i in self.distance_indices)
        self.clarity_edges = tuple(float(e) for e in self.clarity_edges)
        if self.image_size < 8 or self.std <= 0:
            raise InputError(f"bad image settings: image_size={self.image_size}, std={self.std}")

    @property
    def needs_landmarks(self) -> bool:
        return any(k in self.keys for k in ("landmarks", "heatmaps", "distances"))

    @property
    def needs_crops(self) -> bool:
        return any(k in self.keys for k in ("image", "patches")) or (
            "stratum" in self.keys and bool(self.clarity_edges))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        if not isinstance(d, dict):
            raise InputError(f"input spec must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"input spec has unknown fields {unknown}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"bad input spec {d}: {e}") from None


def spec_for_model(model, **overrides) -> InputSpec:
    """The InputSpec matching a model's `input_kind`, `input_keys` and hyper-parameters."""
    hp = model.hparams
    kw: dict = dict(kind=model.input_kind, keys=tuple(model.input_keys))
    if "subset" in hp:
        kw["subset"] = hp["subset"]
    if hp.get("heatmap_channels", 1) > 1:
        kw["heatmap_per_point"] = True
        subset = overrides.get("heatmap_subset", "default")
        if len(SUBSETS[subset]) != hp["heatmap_channels"]:
            raise InputError(f"model has {hp['heatmap_channels']} heatmap channels but heatmap subset "
                             f"{subset!r} has {len(SUBSETS[subset])} points")
    if hp.get("n_strata", 1) > 1 and "clarity_edges" not in overrides:
        raise InputError("a model with clarity strata needs clarity_edges in its InputSpec")
    kw.update(overrides)
    return InputSpec(**kw)


# --------------------------------------------------------------------------- building

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


# --------------------------------------------------------------------------- datasets

@dataclass
class TensorSet:
    """An in-memory dataset: equal-length tensors keyed like a batch, plus labels
    ((N,) int64 class indices, or (N, P, 2) float targets for the keypoint regressor) and the
    InputSpec that built them (used for augmentation and test-time flips)."""

    tensors: dict[str, torch.Tensor]
    labels: torch.Tensor
    spec: InputSpec | None = None

    def __post_init__(self):
        self.labels = torch.as_tensor(self.labels)
        n = len(self.labels)
        bad = {k: len(v) for k, v in self.tensors.items() if len(v) != n}
        if bad:
            raise InputError(f"TensorSet tensors must all have {n} rows (labels); got {bad}")
        if n == 0:
            raise InputError("TensorSet is empty")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}

    def subset(self, idx) -> "TensorSet":
        idx = torch.as_tensor(idx)
        return TensorSet({k: v[idx] for k, v in self.tensors.items()}, self.labels[idx], self.spec)

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


# --------------------------------------------------------------------------- augmentation

def _local_mirror(indices) -> np.ndarray:
    """Permutation within `indices` that MIRROR_PERMUTATION induces; the set must be mirror-closed."""
    idx = list(indices)
    pos = {v: i for i, v in enumerate(idx)}
    perm = mirror_permutation()
    try:
        return np.array([pos[int(perm[v])] for v in idx], dtype=np.int64)
    except KeyError:
        raise InputError("landmark subset is not closed under left/right mirroring") from None


def _pair_mirror(indices) -> np.ndarray:
    """Permutation of the K*(K-1)/2 pairwise distances (i<j order) under mirroring."""
    perm = _local_mirror(indices)
    k = len(perm)
    pair: dict[tuple[int, int], int] = {}
    n = 0
    for i in range(k):
        for j in range(i + 1, k):
            pair[(i, j)] = n
            n += 1

    def ordered(a: int, b: int) -> tuple[int, int]:
        return (a, b) if a <= b else (b, a)

    return np.array([pair[ordered(int(perm[i]), int(perm[j]))] for i in range(k) for j in range(i + 1, k)])


class Mirror:
    """Left/right mirror of built batches: images and heatmaps flipped, landmarks x -> 1 - x (or -x
    for baseline-subtracted ones) with the landmark order permuted (MIRROR_PERMUTATION)."""

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self.lm_perm: torch.Tensor | None = None
        self.hm_perm: torch.Tensor | None = None
        self.dist_perm: torch.Tensor | None = None
        if not {"landmarks", "heatmaps", "distances"} & set(spec.keys):
            return  # images only: no landmark tables needed
        if "landmarks" in spec.keys:
            self.lm_perm = torch.from_numpy(_local_mirror(SUBSETS[spec.subset]))
        if "heatmaps" in spec.keys and spec.heatmap_per_point:
            self.hm_perm = torch.from_numpy(_local_mirror(SUBSETS[spec.heatmap_subset]))
        if "distances" in spec.keys:
            self.dist_perm = torch.from_numpy(_pair_mirror(spec.distance_indices or DISTANCE_POINTS))

    def __call__(self, batch: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mirror every sample (mask None) or those where mask (N,) is True."""
        out = dict(batch)
        for k, v in batch.items():
            if k in ("image", "patches"):
                m = v.flip(-1)
            elif k == "heatmaps":
                m = v.flip(-1)
                if self.hm_perm is not None:
                    m = m[:, self.hm_perm.to(v.device)]
            elif k == "landmarks":
                assert self.lm_perm is not None, "a landmarks batch for a spec without landmarks"
                m = v[:, :, self.lm_perm.to(v.device)].clone()
                m[:, 0] = (0.0 if self.spec.subtract_baseline else 1.0) - m[:, 0]
            elif k == "distances":
                assert self.dist_perm is not None, "a distances batch for a spec without distances"
                m = v[:, self.dist_perm.to(v.device)]
            else:
                continue
            if mask is None:
                out[k] = m
            else:
                out[k] = torch.where(mask.view(-1, *([1] * (v.dim() - 1))), m, v)
        return out


def _rand(shape, g: torch.Generator, device, normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) numbers drawn on the CPU from `g`, then moved to `device`
    (the same tensor on the CPU)."""
    x = torch.randn(shape, generator=g) if normal else torch.rand(shape, generator=g)
    return x.to(device, non_blocking=True)


@dataclass
class Augmenter:
    """Training augmentation of built batches, drawn from a torch.Generator (reproducible).

    Images: random flip (with the matching landmark/heatmap mirror), a head turn (+-turn deg about the
    vertical axis for a share `turn_p` of the images, seen by a pinhole camera `turn_distance`
    half-widths away: the far side of the face shrinks; 0 = off, the default, drawing no random
    numbers), rotation (+-rotation deg), zoom (1 +- zoom), shift, brightness/contrast jitter, random
    erasing. Landmarks: mirror + Gaussian jitter (sd `jitter` in normalised units). The random
    numbers are always drawn on the CPU from `g` (a CPU generator) and moved to the batch's device,
    so a seed gives the same augmentation on every device (and CPU batches are augmented exactly
    as before CUDA support)."""

    spec: InputSpec
    flip: bool = True
    rotation: float = 10.0
    zoom: float = 0.1
    shift: float = 0.08
    brightness: float = 0.2
    contrast: float = 0.2
    erase_p: float = 0.25
    jitter: float = 0.01
    turn: float = 0.0
    turn_p: float = 0.5
    turn_distance: float = 4.0

    def __post_init__(self):
        self.mirror = Mirror(self.spec) if self.flip else None

    def __call__(self, batch: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        first = next(iter(batch.values()))
        n, device = len(first), first.device
        out = dict(batch)
        if self.mirror is not None:
            out = self.mirror(out, _rand(n, g, device) < 0.5)
        if "image" in out:
            out["image"] = self._image(out["image"], g)
        if "landmarks" in out and self.jitter > 0:
            lm = out["landmarks"]
            out["landmarks"] = lm + self.jitter * _rand(lm.shape, g, lm.device, normal=True)
        return out

    def _image(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, device = x.shape[0], x.device

        def u(a):
            return (_rand(n, g, device) * 2 - 1) * a

        if self.turn > 0:
            turned = (_rand(n, g, device) < self.turn_p).to(x.dtype)
            x = turn_images(x, u(self.turn) * turned * math.pi / 180, self.turn_distance)
        ang = u(self.rotation) * math.pi / 180
        scale = 1 + u(self.zoom)
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([cos, -sin, u(self.shift) * 2], 1),
                             torch.stack([sin, cos, u(self.shift) * 2], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        raw = x * self.spec.std + self.spec.mean
        m = raw.mean(dim=(1, 2, 3), keepdim=True)
        raw = (raw - m) * (1 + u(self.contrast)).view(-1, 1, 1, 1) + m + u(self.brightness).view(-1, 1, 1, 1)
        x = (raw.clamp(0, 1) - self.spec.mean) / self.spec.std
        if self.erase_p > 0:
            s = x.shape[-1]
            erase = _rand(n, g, device) < self.erase_p
            area = (0.02 + 0.18 * _rand(n, g, device)) * s * s
            aspect = torch.exp((_rand(n, g, device) * 2 - 1) * math.log(3))
            h = (area * aspect).sqrt().clamp(1, s).long()
            w = (area / aspect).sqrt().clamp(1, s).long()
            y0 = (_rand(n, g, device) * (s - h + 1)).long()
            x0 = (_rand(n, g, device) * (s - w + 1)).long()
            ys = torch.arange(s, device=device).view(1, s, 1)
            xs = torch.arange(s, device=device).view(1, 1, s)
            box = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + h).view(-1, 1, 1)) &
                   (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + w).view(-1, 1, 1)) & erase.view(-1, 1, 1))
            x = x.masked_fill(box[:, None], 0.0)
        return x


def turn_images(x: torch.Tensor, yaw: torch.Tensor, distance: float) -> torch.Tensor:
    """Images (N, C, H, W) turned by `yaw` (N,) radians about their vertical centre line: the plane
    of the image rotated in 3-D and seen by a pinhole camera `distance` half-widths away, re-centred
    as a face detector's box would be. Output pixel (u, v) in [-1, 1] shows the projected point
    p = u + m (m: the centre of the projected image) and samples the source at
    x = p d / (d cos - p sin), y = v (d + x sin) / d."""
    n, _, h, w = x.shape
    d = distance
    cos, sin = torch.cos(yaw).view(n, 1, 1), torch.sin(yaw).view(n, 1, 1)
    centre = (d * cos / (d + sin) - d * cos / (d - sin)) / 2
    u = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device).view(1, 1, w) + centre
    v = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device).view(1, h, 1)
    src_x = u * d / (d * cos - u * sin)
    src_y = v * (d + src_x * sin) / d
    grid = torch.stack([src_x.expand(n, h, w), src_y.expand(n, h, w)], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class PoseAugmenter:
    """Pose augmentation of landmark models: 3-D rotation of the raw landmarks before normalisation.

    Each sample's raw face mesh (pixels; x right, y down, z away from the camera) is turned about the
    face's vertical axis (yaw, uniform in +-max_yaw degrees) and a little about the horizontal one
    (pitch, +-max_yaw * pitch_share), about its centroid, and seen through a pinhole camera
    `distance` face widths away: the sample's points move by persp(R p) - persp(p), so a zero angle
    leaves them exactly as they were. The moved points are then normalised as `build_batch` does
    (spec.method, subset, min-max) and replace the batch's "landmarks"; other keys pass through.

    The "proposed" (a 3-D affine fit on key points) and "similarity" normalisations undo a rigid
    rotation exactly, so with them what this changes is what a turn adds on top of a rotation: the
    perspective foreshortening (near points grow, far ones shrink). With "minmax" it changes the
    pose itself. Random numbers come from `g` on the CPU (reproducible on every device)."""

    spec: InputSpec
    max_yaw: float = 30.0
    pitch_share: float = 1 / 3
    distance: float = 4.0

    def __post_init__(self):
        if "landmarks" not in self.spec.keys:
            raise InputError("pose augmentation is for models with a 'landmarks' input")
        if self.spec.subtract_baseline:
            raise InputError("pose augmentation does not support subject-conditioned (baseline) inputs")
        if not (0 <= self.max_yaw <= 90 and self.distance > 0):
            raise InputError(f"bad pose augmentation: max_yaw={self.max_yaw}, distance={self.distance}")
        self._spec = replace(self.spec, keys=("landmarks",))

    def rotate(self, raw: np.ndarray, yaw, pitch) -> np.ndarray:
        """(N, 478, 3) raw points after turning each face by yaw[i], pitch[i] degrees."""
        from scipy.spatial.transform import Rotation

        p = np.asarray(raw, dtype=np.float64)
        yaw = np.broadcast_to(np.asarray(yaw, dtype=np.float64), (len(p),))
        pitch = np.broadcast_to(np.asarray(pitch, dtype=np.float64), (len(p),))
        R = Rotation.from_euler("ZYX", np.stack([np.zeros(len(p)), -yaw, -pitch], 1), degrees=True).as_matrix()
        c = p.mean(1, keepdims=True)
        q = p - c
        d = self.distance * np.maximum(np.ptp(p[:, :, 0], axis=1), 1e-6)[:, None, None]  # camera distance, px

        def persp(x):
            s = d / np.maximum(d + x[:, :, 2:3], 1e-3 * d)
            return np.concatenate([x[:, :, :2] * s, x[:, :, 2:]], axis=2)

        moved = p + persp(np.einsum("nij,nkj->nki", R, q)) - persp(q)
        return moved.astype(np.float32)

    def __call__(self, batch: dict[str, torch.Tensor], raw, g: torch.Generator) -> dict[str, torch.Tensor]:
        """`batch` with its "landmarks" rebuilt from `raw` (N, 478, 3), the batch's samples' raw points."""
        raw = raw.cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        n = len(raw)
        yaw = ((torch.rand(n, generator=g) * 2 - 1) * self.max_yaw).double().numpy()
        pitch = ((torch.rand(n, generator=g) * 2 - 1) * self.max_yaw * self.pitch_share).double().numpy()
        lm = build_batch(self._spec, self.rotate(raw, yaw, pitch))["landmarks"]
        out = dict(batch)
        ref = batch.get("landmarks")
        out["landmarks"] = lm if ref is None else lm.to(ref.device, ref.dtype)
        return out
