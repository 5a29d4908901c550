"""Training-time augmentation of built batches: left/right mirror, image jitter, head turns, pose."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from ferlib.errors import InputError
from ferlib.faces.features import DISTANCE_POINTS
from ferlib.faces.normalize import SUBSETS, mirror_permutation
from ferlib.inputs.batch import build_batch
from ferlib.inputs.spec import InputSpec


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
