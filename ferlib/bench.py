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

Models: the shipped checkpoints in models/ when present, else freshly created (untrained) models of
the same architecture (timing does not depend on the weights); the output says which.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ferlib import locations
from ferlib.errors import InputError
from ferlib.types import largest_face

REPO = locations.source_root() or Path.cwd()
"""The checkout (its tests/fixtures clip and ../shared datasets); the current folder for an installed copy."""
FIXTURE_CLIP = REPO / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
SHARED_DATA = Path(os.environ.get("FERLIB_SHARED", REPO.parent / "shared")) / "data"
ROLES = {"landmark": ("landmark_cnn1d_fer2013_affectnet", "landmark_cnn1d"),
         "image": ("image_cnn_fer2013", "image_cnn")}
"""Benchmark role -> (shipped checkpoint stem, registry architecture used when it is absent)."""
BACKENDS = ("torch", "torchscript", "onnx")
# Fixture clip: sad/crying until about 9 s, laughing from about 10 s (tests/fixtures/LICENSE.md).
CLIP_LABELS = ((0.0, 9000.0, "sad"), (10000.0, float("inf"), "happy"))


@dataclass
class BenchConfig:
    """What one run measures. `frames`: clip frames per pipeline pass (None = the whole clip)."""

    clip: Path = FIXTURE_CLIP
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


# ----------------------------------------------------------------------------- timing helpers
def spread(samples_ms) -> dict:
    """Median, p10, p90 and count of timing samples in ms."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise InputError("no timing samples to summarise")
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return {"median_ms": float(med), "p10_ms": float(p10), "p90_ms": float(p90), "n": int(a.size)}


@contextmanager
def _no_gc():
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def time_calls(fn, seconds: float, warmup: int = 3, min_iters: int = 5, max_iters: int = 5000) -> list[float]:
    """Call `fn()` `warmup` times, then repeatedly for about `seconds`; per-call times in ms."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    with _no_gc():
        end = time.perf_counter() + seconds
        while len(out) < min_iters or (time.perf_counter() < end and len(out) < max_iters):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def _timed_mesh_frames(clip, max_frames, mesh):
    """(timestamp, BGR frame, decode ms, face-mesh ms) for each frame of `clip`: decoding and a
    MediaPipe face mesh (`mesh`, a FaceMesh graph) alone, the floor every pipeline is measured against."""
    import cv2

    from ferlib.io import iter_video

    it = iter_video(clip, max_frames=max_frames)
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        if item is None:
            return
        _, ts, bgr = item
        t1 = time.perf_counter()
        mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        yield ts, bgr, (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- models and data
def load_role(role: str):
    """(model, card, source) of a benchmark role: the shipped checkpoint, or an untrained model."""
    from ferlib.checkpoint import existing_checkpoint, load_checkpoint, make_card
    from ferlib.classes import FER7
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model
    from ferlib.pipeline import MODELS_DIR

    stem, arch = ROLES[role]
    c = existing_checkpoint(MODELS_DIR / stem)
    if c is not None:
        model, card = load_checkpoint(c)
        return model, card, f"models/{stem} (trained)"
    model = create_model(arch).eval()
    card = make_card(model, FER7, spec_for_model(model))
    card["name"] = f"{arch} (untrained)"
    return model, card, f"untrained {arch} (models/{stem} absent; timing does not depend on weights)"


class Runners:
    """ferlib.runtime runners per (role, backend, threads), made once each by `load_runner`
    (exports are parity-checked against PyTorch by ferlib.export)."""

    def __init__(self, roles: dict):
        self.roles = roles
        self._made: dict[tuple, object] = {}

    def __call__(self, role: str, backend: str, threads: int):
        from ferlib.runtime import load_runner

        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; known: {BACKENDS}")
        key = (role, backend, threads)
        if key not in self._made:
            model, card, _ = self.roles[role]
            self._made[key] = load_runner((model, card), backend=backend, threads=threads)
        return self._made[key]


def _clip_faces(frames, ex):
    """Largest face of each frame: (landmarks (N, 478, 3), frame index (N,), timestamps ms (N,))."""
    lm, idx, ts = [], [], []
    ex.reset()
    for i, t, bgr in frames:
        faces = ex.process(bgr, t)
        if faces:
            f = largest_face(faces)
            lm.append(f.landmarks)
            idx.append(i)
            ts.append(t)
    if not lm:
        raise InputError("no face found in the benchmark clip")
    return np.stack(lm), np.array(idx), np.array(ts)


def _prepared(spec, frames, lm, idx, n: int) -> dict[str, torch.Tensor]:
    """Model inputs for `n` real faces (cycled when the clip has fewer)."""
    from ferlib.crops import face_crop
    from ferlib.inputs import build_batch
    from ferlib.types import Face

    pick = np.arange(n) % len(lm)
    crops = None
    if spec.needs_crops:
        crops = np.stack([face_crop(frames[idx[j]][2], Face(lm[j], (0, 0, 1, 1), 1.0), size=spec.image_size)
                          for j in pick])
    return build_batch(spec, landmarks_px=lm[pick] if spec.needs_landmarks else None, crops=crops)


# ----------------------------------------------------------------------------- sections
def bench_live(cfg: BenchConfig, roles: dict, runners: Runners, backend_for: dict) -> tuple[list, list, list]:
    """MediaPipe alone, pipeline FPS and the stage breakdown, interleaved frame by frame over the clip
    (a change of machine load hits every configuration alike). Per frame: decode once; MediaPipe's
    face mesh alone; per model its own LandmarkExtractor (detect + mesh, timed), then for every
    thread count x batch size its own Pipeline, which collects the faces and runs prepare + model
    once per `batch` frames. A configuration's per-frame time = decode + the model's detect/mesh
    time of that frame + its share of its batch's prepare + model time. Returns (mesh_alone rows,
    pipeline rows, stage rows); the stage rows (batch 1, first thread count) add the Live page's
    overlay drawing."""
    import mediapipe as mp

    from ferlib.draw import draw_result
    from ferlib.landmarks import LandmarkExtractor
    from ferlib.pipeline import Pipeline
    from ferlib.types import FrameResult, Prediction

    keys = [(role, t, b) for role in roles for t in cfg.threads for b in cfg.batches]
    drawn = {role: (role, cfg.threads[0], cfg.batches[0]) for role in roles}
    extractors = {role: LandmarkExtractor(mode="video") for role in roles}
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    pipes = {k: Pipeline(runners(k[0], backend_for[k[0]], k[1]), extractor=extractors[k[0]]) for k in keys}

    def one_pass(max_frames: int | None) -> dict:
        t = {"decode": [], "mesh": [], **{("landmarks", r): [] for r in roles}, **{("draw", r): [] for r in roles},
             **{("prepare", k): [] for k in keys}, **{("model", k): [] for k in keys}}
        chunks: dict[tuple, list] = {k: [] for k in keys}
        n_faces = dict.fromkeys(keys, 0)

        def flush(k) -> None:
            pipe, chunk = pipes[k], chunks[k]
            torch.set_num_threads(k[1])
            with_faces = [(bgr, faces) for bgr, faces in chunk if faces]
            prep = model = 0.0
            if with_faces:
                t0 = time.perf_counter()
                parts = [pipe.inputs_for(bgr, faces) for bgr, faces in with_faces]
                inputs = {n: torch.cat([p[n] for p in parts]) if len(parts) > 1 else parts[0][n] for n in parts[0]}
                t1 = time.perf_counter()
                probs = pipe.probabilities(inputs)
                prep, model = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
            j = 0
            for bgr, faces in chunk:
                preds = []
                for f in faces:
                    preds.append(Prediction(face=f, probs=pipe.smoother(f.face_id, probs[j]), classes=pipe.classes))
                    j += 1
                t[("prepare", k)].append(prep / len(chunk))
                t[("model", k)].append(model / len(chunk))
                if k == drawn[k[0]]:
                    t0 = time.perf_counter()
                    draw_result(bgr.copy(), FrameResult(predictions=preds))
                    t[("draw", k[0])].append((time.perf_counter() - t0) * 1e3)
            n_faces[k] += j
            chunk.clear()

        for p in pipes.values():
            p.reset()
        with _no_gc():
            for ts, bgr, decode_ms, mesh_ms in _timed_mesh_frames(cfg.clip, max_frames, mesh):
                t["decode"].append(decode_ms)
                t["mesh"].append(mesh_ms)
                for role in roles:
                    t0 = time.perf_counter()
                    faces = extractors[role].process(bgr, ts)
                    t[("landmarks", role)].append((time.perf_counter() - t0) * 1e3)
                    for k in keys:
                        if k[0] == role:
                            chunks[k].append((bgr, faces))
                            if len(chunks[k]) == k[2]:
                                flush(k)
            for k in keys:
                if chunks[k]:
                    flush(k)
        t["faces"] = n_faces
        return t

    try:
        _log(f"live pipelines, warm-up ({cfg.warmup_frames} frames)")
        one_pass(cfg.warmup_frames)
        _log(f"live pipelines: {len(keys)} configurations and MediaPipe alone, interleaved per frame")
        t = one_pass(cfg.frames)
    finally:
        mesh.close()
        for ex in extractors.values():
            ex.close()
    dec = np.asarray(t["decode"])
    lmk, fm = np.asarray(t[("landmarks", next(iter(roles)))]), np.asarray(t["mesh"])
    mesh_rows = [{"key": "decode", "what": "decode (PyAV)", **spread(dec)},
                 {"key": "extractor", "what": "LandmarkExtractor.process (video mode: tracking mesh, "
                                              "BlazeFace every 30 frames; the pipeline's)", **spread(lmk)},
                 {"key": "face_mesh", "what": "MediaPipe FaceMesh alone (full frame, tracking, refine_landmarks)",
                  **spread(fm)},
                 {"key": "decode+extractor", "what": "decode + LandmarkExtractor (the landmark pipeline's floor)",
                  **spread(dec + lmk)},
                 {"key": "decode+face_mesh", "what": "decode + MediaPipe FaceMesh", **spread(dec + fm)}]
    for r in mesh_rows:
        r["fps"] = 1e3 / r["median_ms"]
    rows, stage_rows = [], []
    for k in keys:
        role, threads, batch = k
        per_frame = (dec + np.asarray(t[("landmarks", role)]) + np.asarray(t[("prepare", k)])
                     + np.asarray(t[("model", k)]))
        sp = spread(per_frame)
        rows.append({"model": role, "backend": backend_for[role], "threads": threads, "batch": batch,
                     "frames": sp["n"], "faces": t["faces"][k], **sp, "fps": 1e3 / sp["median_ms"],
                     "fps_overall": 1e3 * sp["n"] / float(per_frame.sum())})
        if k == drawn[role]:
            stages = {"decode": dec, "landmarks": t[("landmarks", role)], "prepare": t[("prepare", k)],
                      "model": t[("model", k)], "draw": t[("draw", role)]}
            stages = {n: np.asarray(v) for n, v in stages.items()}
            stages["total"] = np.sum(list(stages.values()), axis=0)
            total = float(stages["total"].mean())
            for n, a in stages.items():
                stage_rows.append({"model": role, "backend": backend_for[role], "threads": threads, "batch": batch,
                                   "stage": n, **spread(a), "mean_ms": float(a.mean()),
                                   "share": float(a.mean()) / total})
    return mesh_rows, rows, stage_rows


def _spec(card):
    from ferlib.checkpoint import card_spec

    return card_spec(card)


def bench_raw(cfg: BenchConfig, roles: dict, runners: Runners, frames, lm, idx, rounds: int = 5) -> list[dict]:
    """Raw model throughput on prepared tensors from real faces, per role x backend x threads x batch;
    every cell is timed in `rounds` rounds, round-robin over the cells (load changes hit all alike)."""
    cells = []
    for role, (model, card, _) in roles.items():
        spec = _spec(card)
        batches = {b: _prepared(spec, frames, lm, idx, b) for b in cfg.batches}
        with torch.inference_mode():
            ref = {b: model(x).float().numpy() for b, x in batches.items()}
        for backend in cfg.backends:
            for threads in cfg.threads:
                _log(f"raw {role} {backend}, {threads} thread(s): export and check")
                run = runners(role, backend, threads)
                for b, x in batches.items():
                    torch.set_num_threads(threads)
                    diff = float(np.max(np.abs(run.outputs(x) - ref[b])))
                    cells.append(({"model": role, "backend": backend, "threads": threads, "batch": b,
                                   "max_abs_diff_vs_torch": diff}, lambda run=run, x=x: run.outputs(x)))
    _log(f"raw models: {len(cells)} cells x {rounds} rounds")
    samples: list[list[float]] = [[] for _ in cells]
    for r in range(rounds):
        for (base, fn), out in zip(cells, samples):
            torch.set_num_threads(base["threads"])
            with torch.inference_mode():
                out += time_calls(fn, cfg.raw_seconds / rounds, warmup=3 if r == 0 else 1, min_iters=2)
    rows = []
    for (base, _), smp in zip(cells, samples):
        sp = spread(smp)
        rows.append({**base, **sp, "ms_per_face": sp["median_ms"] / base["batch"],
                     "faces_per_s": 1e3 * base["batch"] / sp["median_ms"]})
    return rows


def bench_dataset_import(cfg: BenchConfig) -> tuple[list[dict], str | None]:
    """FER2013 landmark extraction into a fresh cache, then the cached re-run; (rows, skip reason)."""
    from ferlib.data import extract_landmarks, import_fer2013

    zp = SHARED_DATA / "fer2013.zip"
    if not zp.is_file():
        return [], f"dataset import skipped: {zp} is absent (../shared/data is only on developer/CI machines)"
    df = import_fer2013(zp)
    sub = df[df["split"] == "train"].sample(n=min(cfg.dataset_images, int((df["split"] == "train").sum())),
                                            random_state=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferlib-bench-cache-") as d:
        for run in ("first run (extract)", "cached re-run"):
            _log(f"dataset import: {len(sub)} FER2013 images, {run}, {cfg.dataset_workers} worker(s)")
            r = extract_landmarks(sub, cache_dir=d, workers=cfg.dataset_workers, progress=False)
            rows.append({"run": run, "images": len(sub), "workers": cfg.dataset_workers,
                         "extracted": r.n_extracted, "cached": r.n_cached, "seconds": r.seconds,
                         "images_per_s": len(sub) / r.seconds, "detection_rate": r.detection_rate})
    return rows, None


def bench_finetune(cfg: BenchConfig, roles: dict, lm, ts) -> list[dict]:
    """Fine-tune the landmark model on `finetune_samples` real clip faces (labels sad/happy by time,
    faces repeated to reach the count) with the Train page's settings, early stopping off."""
    from ferlib.checkpoint import existing_checkpoint, save_checkpoint
    from ferlib.classes import index_of
    from ferlib.inputs import TensorSet
    from ferlib.pipeline import MODELS_DIR
    from ferlib.train import TrainConfig, finetune

    model, card, _ = roles["landmark"]
    keep, labels = [], []
    for j, t in enumerate(ts):
        for lo, hi, name in CLIP_LABELS:
            if lo <= t < hi:
                keep.append(j)
                labels.append(index_of(name, card["classes"]))
    if len(keep) < 2:
        raise InputError("too few labelled clip faces for the fine-tuning benchmark")
    pick = np.arange(cfg.finetune_samples) % len(keep)
    spec = _spec(card)
    data = TensorSet.build(spec, np.asarray(labels)[pick], landmarks_px=lm[np.asarray(keep)[pick]])
    perm = np.random.default_rng(0).permutation(len(data))
    n_val = max(2, round(0.15 * len(data)))
    train_set, val_set = data.subset(perm[n_val:]), data.subset(perm[:n_val])
    config = TrainConfig(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch, patience=0, num_threads=1)
    with tempfile.TemporaryDirectory(prefix="ferlib-bench-ft-") as d:
        base = existing_checkpoint(MODELS_DIR / ROLES["landmark"][0]) \
            or save_checkpoint(model, Path(d) / "base", card)[1]
        t0 = time.perf_counter()
        torch.optim.Adam(model.parameters())  # warm-up: the first optimizer imports torch._dynamo
        first_optimizer_s = time.perf_counter() - t0
        _log(f"fine-tuning {len(train_set)} + {len(val_set)} samples, {cfg.finetune_epochs} epochs")
        t0 = time.perf_counter()
        _, _, result = finetune(base, train_set, val_set, config)
        seconds = time.perf_counter() - t0
    return [{"samples": len(data), "train": len(train_set), "val": len(val_set), "epochs": result.epochs_run,
             "batch_size": cfg.finetune_batch, "threads": 1, "seconds": seconds,
             "s_per_epoch": seconds / max(result.epochs_run, 1),
             "s_per_2000_samples_20_epochs": seconds * (2000 / len(data)) * (20 / max(result.epochs_run, 1)),
             "val_acc": result.best.get("val_acc"), "first_optimizer_s": first_optimizer_s}]


# ----------------------------------------------------------------------------- user paths
PATH_ROLES = {"default": None, "landmark": ROLES["landmark"][0]}
"""User-path benchmark models: the shipped default (Pipeline(None): its own path, image models
without face mesh) and the shipped landmark model (face mesh on every face)."""


def _predict_cli(clip: Path, model: str | None, threads: int, max_frames: int | None, out: Path) -> dict:
    """`python -m ferlib predict CLIP --threads T` as a user runs it; wall time measured outside,
    the frame loop's time read from the command's own `timing:` line."""
    import re
    import subprocess

    cmd = [sys.executable, "-m", "ferlib", "predict", str(clip), "--out", str(out), "--threads", str(threads)]
    cmd += ["--model", model] if model else []
    cmd += ["--max-frames", str(max_frames)] if max_frames else []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    m = re.search(r"timing: model and graphs ready in ([\d.]+) s; (\d+) frames/images in ([\d.]+) s", r.stderr)
    if r.returncode != 0 or m is None:
        raise InputError(f"ferlib predict failed in the benchmark (rc {r.returncode}): {r.stderr[-1500:]}")
    ready, n, loop = float(m.group(1)), int(m.group(2)), float(m.group(3))
    backend = re.search(r"model: \S+ \([^,]+, (\w+),", r.stderr)
    return {"wall_s": wall, "startup_s": wall - loop, "ready_s": ready, "frames": n, "loop_s": loop,
            "ms_per_frame": 1e3 * loop / n, "backend": backend.group(1) if backend else "?"}


def _group_photo(frames, ex) -> np.ndarray:
    """Five faces on a 600x400 grid (3 + 2), cut from five clip frames spread over the clip."""
    import cv2

    from ferlib.crops import square_crop

    group = np.full((400, 600, 3), 90, np.uint8)
    picks = np.linspace(0, len(frames) - 1, 5).astype(int)
    for j, i in enumerate(picks):
        bgr = frames[i][2]
        ex.reset()
        faces = ex.process(bgr)
        if not faces:
            raise InputError(f"no face in clip frame {i} for the group photo")
        x0, y0, x1, y1 = largest_face(faces).box
        crop, _, _ = square_crop(bgr, (x0 + x1) / 2, (y0 + y1) / 2, 1.6 * max(x1 - x0, y1 - y0))
        r, c = divmod(j, 3)
        group[r * 200:(r + 1) * 200, c * 200 + 50 * r:(c + 1) * 200 + 50 * r] = cv2.resize(crop, (200, 200))
    return group


def bench_paths(cfg: BenchConfig, frames) -> tuple[list[dict], list[dict], list[dict]]:
    """The exact user paths, interleaved in `cfg.path_rounds` rounds (the order rotates per round):
    `ferlib predict` on the clip end to end for the default and the landmark model with 1 and 2
    threads (subprocesses; start-up apart), then one in-process pass over the clip where every frame
    is decoded, run through MediaPipe's face mesh alone, and through a video-mode Pipeline per
    model x thread count (the user's objects: `Pipeline(model, threads=T)`, torch's threads set to T
    as `ferlib predict --threads T` does); then a 5-face group photo through static-mode Pipelines.
    Returns (predict rows, per-frame rows, ratio rows)."""
    import mediapipe as mp

    from ferlib.landmarks import LandmarkExtractor
    from ferlib.pipeline import Pipeline
    from ferlib.runtime import set_torch_threads

    models = {r: m for r, m in PATH_ROLES.items()}
    keys = [(r, t) for r in models for t in cfg.threads]
    pipes = {k: Pipeline(models[k[0]], threads=k[1], mode="video") for k in keys}
    statics = {k: Pipeline(models[k[0]], threads=k[1], mode="static") for k in keys}
    names = {r: pipes[(r, cfg.threads[0])].name for r in models}
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    with LandmarkExtractor(mode="static", mesh=False) as ex:
        group = _group_photo(frames, ex)
    runs: dict[tuple, list[dict]] = {k: [] for k in keys}
    t: dict = {"decode": [], "face_mesh": [], **{k: [] for k in keys}, **{("group", k): [] for k in keys},
               **{(stage, k): [] for stage in ("landmarks", "prepare", "model") for k in keys}}
    faces: dict = {("group", k): [] for k in keys}
    warm = min(cfg.warmup_frames, 10)
    try:
        with tempfile.TemporaryDirectory(prefix="ferlib-bench-paths-") as d:
            for rnd in range(cfg.path_rounds):
                order = keys[rnd % len(keys):] + keys[:rnd % len(keys)]
                for k in order:
                    _log(f"paths round {rnd + 1}/{cfg.path_rounds}: ferlib predict, {k[0]} model, {k[1]} thread(s)")
                    runs[k].append(_predict_cli(cfg.clip, models[k[0]], k[1], cfg.frames, Path(d) / "p.csv"))
                _log(f"paths round {rnd + 1}/{cfg.path_rounds}: in-process pass, {len(keys)} pipelines + face mesh")
                for p in pipes.values():
                    p.reset()
                with _no_gc():
                    n = 0
                    for ts, bgr, decode_ms, mesh_ms in _timed_mesh_frames(cfg.clip, cfg.frames, mesh):
                        keep = n >= warm or rnd > 0
                        if keep:
                            t["decode"].append(decode_ms)
                            t["face_mesh"].append(mesh_ms)
                        for k in order:
                            set_torch_threads(k[1])
                            t0 = time.perf_counter()
                            res = pipes[k].process(bgr, ts)
                            if keep:
                                t[k].append((time.perf_counter() - t0) * 1e3)
                                for stage in ("landmarks", "prepare", "model"):
                                    t[(stage, k)].append(res.timings_ms.get(stage, 0.0))
                        n += 1
                    for i in range(cfg.group_repeats):
                        for k in order:
                            set_torch_threads(k[1])
                            t0 = time.perf_counter()
                            res = statics[k].process(group)
                            if i or rnd:
                                t[("group", k)].append((time.perf_counter() - t0) * 1e3)
                                faces[("group", k)].append(len(res.predictions))
    finally:
        set_torch_threads(1)
        mesh.close()
        for p in [*pipes.values(), *statics.values()]:
            p.close()
    predict_rows = []
    for k in keys:
        rs = runs[k]
        med = {f: float(np.median([r[f] for r in rs])) for f in ("wall_s", "startup_s", "ready_s", "loop_s",
                                                                  "ms_per_frame")}
        predict_rows.append({"model": k[0], "name": names[k[0]], "backend": rs[0]["backend"], "threads": k[1],
                             "runs": len(rs), "frames": rs[0]["frames"], **med, "fps": 1e3 / med["ms_per_frame"],
                             "ms_per_frame_runs": [r["ms_per_frame"] for r in rs]})
    dec, fm = np.asarray(t["decode"]), np.asarray(t["face_mesh"])
    frame_rows = [{"path": "decode (PyAV)", "key": "decode", **spread(dec)},
                  {"path": "MediaPipe face mesh alone (full frame, tracking, refined irises)", "key": "face_mesh",
                   **spread(fm)},
                  {"path": "decode + face mesh alone", "key": "decode+face_mesh", **spread(dec + fm)}]
    for k in keys:
        what = ("image path, no face mesh (detector box -> crop -> model)" if not pipes[k].extractor.mesh
                else "landmark path (detector -> face mesh -> normalise -> model)")
        frame_rows.append({"path": f"Pipeline.process, {names[k[0]]}: {what}", "key": f"pipeline/{k[0]}",
                           "model": k[0], "threads": k[1], "backend": pipes[k].backend, **spread(t[k])})
        frame_rows.append({"path": f"decode + Pipeline.process, {names[k[0]]}", "key": f"decode+pipeline/{k[0]}",
                           "model": k[0], "threads": k[1], "backend": pipes[k].backend,
                           **spread(dec + np.asarray(t[k]))})
        for stage, what in (("landmarks", "faces (detection / face mesh / tracking)"),
                            ("prepare", "model inputs (crop or normalise)"),
                            ("model", f"model call ({pipes[k].backend}"
                                      f"{', flip averaging' if pipes[k]._mirror else ''})")):
            frame_rows.append({"path": f"  stage of {names[k[0]]}: {what}", "key": f"{stage}/{k[0]}",
                               "model": k[0], "threads": k[1], "backend": pipes[k].backend,
                               **spread(t[(stage, k)])})
    for k in keys:
        g = np.asarray(t[("group", k)])
        sp = spread(g)
        nf = int(np.median(faces[("group", k)]))
        frame_rows.append({"path": f"5-face group photo 600x400, static Pipeline, {names[k[0]]} (one model call "
                                   f"for the {nf} faces found)", "key": f"group/{k[0]}", "model": k[0],
                           "threads": k[1], "backend": statics[k].backend, **sp, "faces": nf,
                           "faces_per_s": 1e3 * nf / sp["median_ms"]})
    for r in frame_rows:
        r["fps"] = 1e3 / r["median_ms"]
    floor = float(np.median(dec + fm))
    ratios = []
    for k in keys:
        pr = next(r for r in predict_rows if (r["model"], r["threads"]) == k)
        inproc = float(np.median(dec + np.asarray(t[k])))
        ratios.append({"model": k[0], "name": names[k[0]], "threads": k[1],
                       "predict_ms_per_frame": pr["ms_per_frame"], "decode_face_mesh_ms": floor,
                       "predict_over_floor": floor / pr["ms_per_frame"],
                       "pipeline_ms_per_frame": inproc, "pipeline_over_floor": floor / inproc})
    t1 = cfg.threads[0]
    img, lmk = (float(np.median(t[(r, t1)])) for r in ("default", "landmark"))
    ratios.append({"model": "default / landmark", "name": f"{names['default']} vs {names['landmark']}",
                   "threads": t1, "image_path_ms": img, "landmark_path_ms": lmk,
                   "landmark_over_image_speed": img / lmk})
    return predict_rows, frame_rows, ratios


def paths_markdown(rep: "Report") -> list[str]:
    """The user-path tables (empty when the section did not run)."""
    if not rep.paths_predict:
        return []
    ms = [("median_ms", "median ms"), ("p10_ms", "p10"), ("p90_ms", "p90")]
    cfg = rep.meta.get("config", {})
    return ["", "## User paths (interleaved)", "",
            f"{cfg.get('path_rounds')} rounds; each round runs `ferlib predict` on the clip for every model x thread "
            "count (order rotated per round), then one in-process pass where every frame is decoded and goes "
            "through face mesh alone and through each Pipeline. Medians over rounds (predict) and frames (per frame).",
            "", "### `python -m ferlib predict CLIP --threads T` end to end", "",
            md_table(rep.paths_predict, [("name", "model"), ("backend", "runtime"), ("threads", "threads"),
                                         ("frames", "frames"), ("wall_s", "wall s"), ("startup_s", "start-up s"),
                                         ("loop_s", "frames s"), ("ms_per_frame", "ms/frame"), ("fps", "FPS"),
                                         ("runs", "runs")]),
            "", "Start-up = wall time - the frame loop's time (interpreter, imports, model export, MediaPipe graphs, "
            "CSV writing).", "", "### Per frame, in process", "",
            md_table(rep.paths_frames, [("path", "path"), ("threads", "threads"), ("backend", "runtime"), *ms,
                                        ("fps", "FPS"), ("faces_per_s", "faces/s"), ("n", "n")]),
            "", "### Ratios (speed relative to decode + face mesh alone; >= 0.85 is the goal)", "",
            md_table(rep.paths_ratios, [("name", "model"), ("threads", "threads"),
                                        ("predict_ms_per_frame", "predict ms/frame"),
                                        ("decode_face_mesh_ms", "decode + face mesh ms"),
                                        ("predict_over_floor", "predict speed / floor"),
                                        ("pipeline_ms_per_frame", "decode + Pipeline ms"),
                                        ("pipeline_over_floor", "Pipeline speed / floor"),
                                        ("landmark_over_image_speed", "landmark path speed / image path"),
                                        ("image_path_ms", "image path ms"), ("landmark_path_ms", "landmark path ms")])]


def run_paths_bench(cfg: BenchConfig) -> "Report":
    """Only the user paths (`ferlib bench --only paths`)."""
    from ferlib.io import iter_video

    t_start = time.perf_counter()
    rep = Report(meta=_meta(cfg))
    frames = list(iter_video(cfg.clip, max_frames=cfg.frames))
    _clip_meta(rep, cfg, frames)
    rep.paths_predict, rep.paths_frames, rep.paths_ratios = bench_paths(cfg, frames)
    rep.meta["load_avg_end"] = list(os.getloadavg())
    rep.meta["seconds"] = time.perf_counter() - t_start
    return rep


# ----------------------------------------------------------------------------- ratios, targets
def _best(rows, **match) -> dict:
    cand = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not cand:
        raise InputError(f"no benchmark row matches {match}")
    return max(cand, key=lambda r: r.get("fps", r.get("faces_per_s", 0.0)))


def ratios_and_targets(rep: Report, cfg: BenchConfig) -> None:
    mesh = {r["key"]: r["fps"] for r in rep.mesh_alone}
    for b in cfg.batches:
        lmp, imp = _best(rep.pipeline, model="landmark", batch=b), _best(rep.pipeline, model="image", batch=b)
        rep.ratios.append({"batch": b, "landmark_fps": lmp["fps"], "image_fps": imp["fps"],
                           "landmark_over_image": lmp["fps"] / imp["fps"],
                           "landmark_over_face_mesh": lmp["fps"] / mesh["face_mesh"],
                           "landmark_over_extractor": lmp["fps"] / mesh["extractor"],
                           "landmark_over_floor": lmp["fps"] / mesh["decode+extractor"]})
    r1 = rep.ratios[0]
    raw1 = min((r for r in rep.raw_model if r["model"] == "landmark" and r["batch"] == cfg.batches[0]),
               key=lambda r: r["ms_per_face"])
    rawN = _best(rep.raw_model, model="landmark", batch=cfg.batches[-1])
    ft = rep.finetune[0]
    t = [("landmark pipeline (batch 1) / MediaPipe face mesh alone", ">= 0.85x", r1["landmark_over_face_mesh"],
          r1["landmark_over_face_mesh"] >= 0.85, "x"),
         ("landmark pipeline / image-baseline pipeline (batch 1)", ">= 3x", r1["landmark_over_image"],
          r1["landmark_over_image"] >= 3.0, "x"),
         (f"raw landmark model, batch {raw1['batch']} ({raw1['backend']}, {raw1['threads']} thr)", "<= 0.2 ms/face",
          raw1["ms_per_face"], raw1["ms_per_face"] <= 0.2, "ms/face"),
         (f"raw landmark model, batch {rawN['batch']} ({rawN['backend']}, {rawN['threads']} thr)", ">= 10,000 faces/s",
          rawN["faces_per_s"], rawN["faces_per_s"] >= 10000, "faces/s"),
         (f"fine-tuning {ft['samples']} samples x {ft['epochs']} epochs", "<= 60 s", ft["seconds"],
          ft["seconds"] <= 60.0, "s")]
    rep.targets = [{"target": name, "goal": goal, "measured": val, "unit": unit, "met": bool(ok)}
                   for name, goal, val, ok, unit in t]
    cls = {m: sum(r["mean_ms"] for r in rep.stages if r["model"] == m and r["stage"] in ("prepare", "model"))
           for m in ROLES}
    rep.notes.append(f"classification alone (prepare + model, mean per frame at batch 1): landmark "
                     f"{cls['landmark']:.2f} ms, image {cls['image']:.2f} ms ({cls['image'] / cls['landmark']:.1f}x); "
                     "both pipelines share the same decode and detection + face mesh stages")


# ----------------------------------------------------------------------------- run + output
def _machine() -> dict:
    import mediapipe
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
    rep.meta["clip"] = {"path": str(cfg.clip.relative_to(REPO)) if cfg.clip.is_relative_to(REPO) else str(cfg.clip),
                        "frames": len(frames), "size": f"{frames[0][2].shape[1]}x{frames[0][2].shape[0]}"}


def run_bench(cfg: BenchConfig) -> Report:
    """Run every section of the benchmark and return the report."""
    from ferlib.io import iter_video
    from ferlib.landmarks import LandmarkExtractor

    t_start = time.perf_counter()
    rep = Report(meta=_meta(cfg))
    roles = {r: load_role(r) for r in ROLES}
    rep.models = {r: src for r, (_, _, src) in roles.items()}
    _log(f"decoding {cfg.clip.name}")
    frames = list(iter_video(cfg.clip, max_frames=cfg.frames))
    _clip_meta(rep, cfg, frames)
    with LandmarkExtractor(mode="video") as ex:
        lm, idx, ts = _clip_faces(frames, ex)
    runners = Runners(roles)
    rep.raw_model = bench_raw(cfg, roles, runners, frames, lm, idx)
    b1 = cfg.batches[0]
    backend_for = {role: min((r for r in rep.raw_model if r["model"] == role and r["batch"] == b1),
                             key=lambda r: r["median_ms"])["backend"] for role in roles}
    rep.notes.append(f"pipelines use each model's fastest backend at batch {b1} in this run: {backend_for} "
                     f"(outputs equal PyTorch's within float tolerance; see max_abs_diff_vs_torch)")
    rep.mesh_alone, rep.pipeline, rep.stages = bench_live(cfg, roles, runners, backend_for)
    rep.dataset_import, skip = bench_dataset_import(cfg)
    if skip:
        rep.notes.append(skip)
    rep.finetune = bench_finetune(cfg, roles, lm, ts)
    torch.set_num_threads(1)
    rep.paths_predict, rep.paths_frames, rep.paths_ratios = bench_paths(cfg, frames)
    ratios_and_targets(rep, cfg)
    rep.meta["load_avg_end"] = list(os.getloadavg())
    rep.meta["seconds"] = time.perf_counter() - t_start
    return rep


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "met" if v else "**not met**"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """Markdown table of `rows` with (key, header) columns."""
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def _header(rep: Report, command: str) -> list[str]:
    m = rep.meta
    return [f"# Benchmark {m['date']} {m['time_utc']} UTC",
            "",
            f"Command: `{command}`  ",
            f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
            f"onnxruntime {m['onnxruntime']}, mediapipe {m['mediapipe']}.  ",
            f"Load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in m['load_avg_start'])}, "
            f"at end {', '.join(f'{x:.2f}' for x in m['load_avg_end'])}; run took {m['seconds']:.0f} s.  ",
            f"Clip: `{m['clip']['path']}`, {m['clip']['frames']} frames, {m['clip']['size']}.  "]


def to_markdown(rep: Report, command: str) -> str:
    if not rep.pipeline:  # `--only paths`
        return "\n".join(_header(rep, command) + paths_markdown(rep) + [""])
    ms = [("median_ms", "median ms"), ("p10_ms", "p10"), ("p90_ms", "p90")]
    out = [*_header(rep, command),
           "Models: " + "; ".join(f"{k}: {v}" for k, v in rep.models.items()) + ".",
           "", *[f"- {n}" for n in rep.notes],
           "", "## Targets", "",
           md_table(rep.targets, [("target", "target"), ("goal", "goal"), ("measured", "measured"),
                                  ("unit", "unit"), ("met", "status")]),
           "", "## MediaPipe alone (per frame)", "",
           md_table(rep.mesh_alone, [("what", "what"), *ms, ("fps", "FPS"), ("n", "frames")]),
           "", "Interleaved with the pipelines below (same frames, same load).",
           "", "## Pipeline FPS (decode -> detect/mesh -> normalise -> classify)", "",
           "All configurations and MediaPipe alone run interleaved frame by frame in one pass over the clip. "
           "Per-frame time = decode + the model's detect/mesh time of the frame + its share of its batch's "
           "prepare + model time (batch = frames whose faces go through the model in one call). "
           "FPS = 1000 / median; FPS overall = frames / total time.", "",
           md_table(rep.pipeline, [("model", "model"), ("backend", "backend"), ("threads", "threads"),
                                   ("batch", "batch"), *ms, ("fps", "FPS"), ("fps_overall", "FPS overall"),
                                   ("frames", "frames"), ("faces", "faces")]),
           "", "## Ratios (best thread count per batch size)", "",
           md_table(rep.ratios, [("batch", "batch"), ("landmark_fps", "landmark FPS"), ("image_fps", "image FPS"),
                                 ("landmark_over_image", "landmark / image"),
                                 ("landmark_over_face_mesh", "landmark / face mesh alone"),
                                 ("landmark_over_extractor", "landmark / LandmarkExtractor alone"),
                                 ("landmark_over_floor", "landmark / (decode + LandmarkExtractor)")]),
           "", "## Stage breakdown per frame (batch 1, with the Live page's overlay drawing)", "",
           md_table(rep.stages, [("model", "model"), ("backend", "backend"), ("stage", "stage"),
                                 ("median_ms", "median ms"), ("p90_ms", "p90"), ("mean_ms", "mean ms"),
                                 ("share", "share of mean total")]),
           "", "## Raw model on prepared tensors (real clip faces)", "",
           md_table(rep.raw_model, [("model", "model"), ("backend", "backend"), ("threads", "threads"),
                                    ("batch", "batch"), ("median_ms", "median ms/batch"), ("p10_ms", "p10"),
                                    ("p90_ms", "p90"), ("ms_per_face", "ms/face"), ("faces_per_s", "faces/s"),
                                    ("max_abs_diff_vs_torch", "max |diff| vs torch")]),
           "", "## Dataset import (FER2013 landmark extraction through ferlib.data.cache)", ""]
    if rep.dataset_import:
        out.append(md_table(rep.dataset_import, [("run", "run"), ("images", "images"), ("workers", "workers"),
                                                 ("extracted", "extracted"), ("cached", "cached"),
                                                 ("seconds", "seconds"), ("images_per_s", "images/s"),
                                                 ("detection_rate", "detection rate")]))
    else:
        out.append("Skipped: ../shared/data/fer2013.zip is absent.")
    out += ["", "## Fine-tuning (landmark model, real clip faces labelled sad/happy, Train page settings, "
            "early stopping off)", "",
            md_table(rep.finetune, [("samples", "samples"), ("train", "train"), ("val", "val"),
                                    ("epochs", "epochs"), ("batch_size", "batch"), ("threads", "threads"),
                                    ("seconds", "seconds"), ("s_per_epoch", "s/epoch")]), "",
            "Seconds include loading the base checkpoint, every epoch and its validation; not the one-time "
            f"import that a process's first torch optimizer triggers ({rep.finetune[0]['first_optimizer_s']:.1f} s "
            "in this run, before timing).", ""]
    out += paths_markdown(rep)
    return "\n".join(out)


def write_report(rep: Report, out_dir, name: str, command: str) -> tuple[Path, Path, str]:
    """Write `<out_dir>/<date>-<name>.json` and `.md` atomically; returns (json, md, markdown)."""
    from ferlib.fsutil import atomic_write_bytes, json_default

    out_dir = Path(out_dir)
    stem = out_dir / f"{rep.meta['date']}-{name}"
    md = to_markdown(rep, command)
    data = {"command": command, **asdict(rep)}
    jpath, mpath = stem.with_suffix(".json"), stem.with_suffix(".md")
    atomic_write_bytes(jpath, json.dumps(data, indent=1, default=json_default).encode())
    atomic_write_bytes(mpath, md.encode())
    return jpath, mpath, md


__all__ = ["BenchConfig", "Report", "bench_live", "bench_paths", "bench_raw", "md_table", "run_bench",
           "run_paths_bench", "spread", "time_calls",
           "to_markdown", "write_report"]
