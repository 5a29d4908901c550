"""A whole run: every section in order (`run_bench`) or only the user paths (`run_paths_bench`),
with the machine and clip described in the report's meta."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from ferlib import locations
from ferlib.bench.config import ROLES, BenchConfig, Report
from ferlib.bench.live import bench_live
from ferlib.bench.paths import bench_paths
from ferlib.bench.raw import bench_raw
from ferlib.bench.report import ratios_and_targets
from ferlib.bench.roles import Runners, clip_faces, load_role
from ferlib.bench.timing import log
from ferlib.bench.training import bench_dataset_import, bench_finetune
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.io import iter_video


def _machine() -> dict:
    import mediapipe  # seconds to import: only for its version here
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "mediapipe": mediapipe.__version__,
            "load_avg_start": list(os.getloadavg())}


def _meta(cfg: BenchConfig) -> dict:
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "time_utc": datetime.now(timezone.utc).strftime("%H:%M:%S"),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, **_machine()}


def _clip_meta(rep: Report, cfg: BenchConfig, frames) -> None:
    repo = locations.source_root() or Path.cwd()
    rep.meta["clip"] = {"path": str(cfg.clip.relative_to(repo)) if cfg.clip.is_relative_to(repo) else str(cfg.clip),
                        "frames": len(frames), "size": f"{frames[0][2].shape[1]}x{frames[0][2].shape[0]}"}


def run_bench(cfg: BenchConfig, shared_data: Path) -> Report:
    """Run every section of the benchmark and return the report (`shared_data`: the folder with
    fer2013.zip for the dataset import; the section is skipped without it)."""
    t_start = time.perf_counter()
    rep = Report(meta=_meta(cfg))
    roles = {r: load_role(r) for r in ROLES}
    rep.models = {r: src for r, (_, _, src) in roles.items()}
    log(f"decoding {cfg.clip.name}")
    frames = list(iter_video(cfg.clip, max_frames=cfg.frames))
    _clip_meta(rep, cfg, frames)
    with LandmarkExtractor(mode="video") as ex:
        lm, idx, ts = clip_faces(frames, ex)
    runners = Runners(roles)
    rep.raw_model = bench_raw(cfg, roles, runners, frames, lm, idx)
    b1 = cfg.batches[0]
    backend_for = {role: min((r for r in rep.raw_model if r["model"] == role and r["batch"] == b1),
                             key=lambda r: r["median_ms"])["backend"] for role in roles}
    rep.notes.append(f"pipelines use each model's fastest backend at batch {b1} in this run: {backend_for} "
                     f"(outputs equal PyTorch's within float tolerance; see max_abs_diff_vs_torch)")
    rep.mesh_alone, rep.pipeline, rep.stages = bench_live(cfg, roles, runners, backend_for)
    rep.dataset_import, skip = bench_dataset_import(cfg, Path(shared_data) / "fer2013.zip")
    if skip:
        rep.notes.append(skip)
    rep.finetune = bench_finetune(cfg, roles, lm, ts)
    torch.set_num_threads(1)
    rep.paths_predict, rep.paths_frames, rep.paths_ratios = bench_paths(cfg, frames)
    ratios_and_targets(rep, cfg)
    rep.meta["load_avg_end"] = list(os.getloadavg())
    rep.meta["seconds"] = time.perf_counter() - t_start
    return rep


def run_paths_bench(cfg: BenchConfig) -> Report:
    """Only the user paths (`ferlib bench --only paths`)."""
    t_start = time.perf_counter()
    rep = Report(meta=_meta(cfg))
    frames = list(iter_video(cfg.clip, max_frames=cfg.frames))
    _clip_meta(rep, cfg, frames)
    rep.paths_predict, rep.paths_frames, rep.paths_ratios = bench_paths(cfg, frames)
    rep.meta["load_avg_end"] = list(os.getloadavg())
    rep.meta["seconds"] = time.perf_counter() - t_start
    return rep
