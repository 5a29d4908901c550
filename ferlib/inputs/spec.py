"""The input specification: `InputSpec` (stored in every model card) says what `build_batch` makes."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ferlib.errors import InputError
from ferlib.faces.normalize import SUBSETS

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
    method/subset: landmark normalisation (ferlib.faces.normalize) and index subset for "landmarks".
    image_size, mean, std: crops are resized to image_size^2 and scaled (x/255 - mean) / std.
    heatmap_*: Gaussian heatmaps of the normalised heatmap_subset points, summed into one channel
    or one per point. patch_size: eye/brow/mouth patches (REGIONS) for "patches".
    distance_indices: landmark indices for "distances" (empty = ferlib.faces.features.DISTANCE_POINTS).
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

    @property
    def box_framed(self) -> bool:
        """Whether the model's face crops are framed on the face's detector box (`model_crop(on_box=True)`):
        image-only models, which learn tight crops framed as a face detector frames them (FER2013), so
        `predict`, Live, training and evaluation all cut those. Models that read landmarks too frame on the
        landmarks (a hybrid's heatmaps follow that crop)."""
        return self.needs_crops and not (self.needs_landmarks or self.subtract_baseline)

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
