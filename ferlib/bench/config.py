"""What one benchmark run measures (BenchConfig), what it found (Report), and the models it times."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ferlib import locations

ROLES = {"landmark": ("landmark_cnn1d_fer2013_affectnet", "landmark_cnn1d"),
         "image": ("image_cnn_fer2013", "image_cnn")}
"""Benchmark role -> (shipped checkpoint stem, registry architecture used when it is absent)."""
BACKENDS = ("torch", "torchscript", "onnx")
# Fixture clip: sad/crying until about 9 s, laughing from about 10 s (tests/fixtures/LICENSE.md).
CLIP_LABELS = ((0.0, 9000.0, "sad"), (10000.0, float("inf"), "happy"))
PATH_ROLES = {"default": None, "landmark": ROLES["landmark"][0]}
"""User-path benchmark models: the shipped default (Pipeline(None): its own path, image models
without face mesh) and the shipped landmark model (face mesh on every face)."""


@dataclass
class BenchConfig:
    """What one run measures. `clip`: the video (default: the committed test clip,
    `ferlib.locations.fixture_clip`). `frames`: clip frames per pipeline pass (None = the whole clip)."""

    clip: Path = field(default_factory=locations.fixture_clip)
    frames: int | None = None
    batches: tuple[int, ...] = (1, 10, 32, 64)
    threads: tuple[int, ...] = (1, 2)
    backends: tuple[str, ...] = BACKENDS
    raw_seconds: float = 1.0
    warmup_frames: int = 10
    dataset_images: int = 1000
    dataset_workers: int = 2
    finetune_samples: int = 2000
    finetune_epochs: int = 20
    finetune_batch: int = 32
    path_rounds: int = 3
    group_repeats: int = 20
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw) -> "BenchConfig":
        """A few seconds: every section runs, on a handful of frames and samples."""
        base = dict(frames=12, batches=(1, 4), threads=(1,), raw_seconds=0.02, warmup_frames=2,
                    dataset_images=8, dataset_workers=1, finetune_samples=200, finetune_epochs=1, path_rounds=1,
                    group_repeats=3, quick=True)
        return cls(**{**base, **kw})


@dataclass
class Report:
    """Everything one run measured (JSON-ready)."""

    meta: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    mesh_alone: list[dict] = field(default_factory=list)
    pipeline: list[dict] = field(default_factory=list)
    raw_model: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    dataset_import: list[dict] = field(default_factory=list)
    finetune: list[dict] = field(default_factory=list)
    ratios: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)
    paths_predict: list[dict] = field(default_factory=list)
    paths_frames: list[dict] = field(default_factory=list)
    paths_ratios: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
