"""`python -m ferlib bench`: the speed of everything that matters on this machine, in one run.

Measures, on the committed fixture clip: MediaPipe alone (decode, the LandmarkExtractor the pipeline
uses, and MediaPipe's plain face mesh as the issue's floor), the full pipeline (decode -> detect/mesh
-> normalise -> classify) of the landmark model and the image baseline at several frame batch sizes
and thread counts, raw-model throughput on prepared tensors (PyTorch, TorchScript, ONNX Runtime),
a per-frame stage breakdown including the Live page's overlay drawing, dataset import (landmark
extraction of FER2013 images, then the cached re-run) and fine-tuning time. Warm-up first, then
timed iterations; medians with p10/p90. Configurations that are compared run interleaved (frame by
frame, or round-robin), so a change in machine load hits them alike. Prints Markdown, writes
`<out>/<date>-<name>.json` and `.md`.

One module per family: `live` (MediaPipe alone, pipeline FPS, stages), `raw` (models on prepared
tensors), `training` (dataset import, fine-tuning), `paths` (what users run); `roles` (the models and
their inputs), `timing`, `report` (ratios, targets, Markdown, files), `run` (a whole run). Nothing in
the library imports this package; `ferlib bench` does, when run.

Models: the shipped checkpoints in models/ when present, else freshly created (untrained) models of
the same architecture (timing does not depend on the weights); the output says which.
"""
from __future__ import annotations

from pathlib import Path

from ferlib import locations
from ferlib.bench import run as _run
from ferlib.bench import training as _training
from ferlib.bench.config import BACKENDS, CLIP_LABELS, PATH_ROLES, ROLES, BenchConfig, Report
from ferlib.bench.live import bench_live
from ferlib.bench.paths import bench_paths
from ferlib.bench.raw import bench_raw
from ferlib.bench.report import md_table, paths_markdown, ratios_and_targets, to_markdown, write_report
from ferlib.bench.roles import Runners, clip_faces, load_role, prepared
from ferlib.bench.run import run_paths_bench
from ferlib.bench.timing import spread, time_calls
from ferlib.bench.training import bench_finetune

SHARED_DATA: Path = locations.shared_data_dir()
"""The datasets folder the dataset-import section reads fer2013.zip from (`ferlib.locations`)."""


def bench_dataset_import(cfg: BenchConfig) -> tuple[list[dict], str | None]:
    """`training.bench_dataset_import` on SHARED_DATA's fer2013.zip."""
    return _training.bench_dataset_import(cfg, SHARED_DATA / "fer2013.zip")


def run_bench(cfg: BenchConfig) -> Report:
    """Every section (`run.run_bench`), the dataset import on SHARED_DATA."""
    return _run.run_bench(cfg, SHARED_DATA)


__all__ = ["BACKENDS", "CLIP_LABELS", "PATH_ROLES", "ROLES", "SHARED_DATA", "BenchConfig", "Report", "Runners",
           "bench_dataset_import", "bench_finetune", "bench_live", "bench_paths", "bench_raw", "clip_faces",
           "load_role", "md_table", "paths_markdown", "prepared", "ratios_and_targets", "run_bench",
           "run_paths_bench", "spread", "time_calls", "to_markdown", "write_report"]
