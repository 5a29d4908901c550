"""`ferlib predict --engine ray`: tasks, resumable JSON shards, the CSV in input order."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ferlib import __version__
from ferlib.errors import FerError, InputError
from ferlib.fsutil import atomic_write_bytes, json_default, sha256_file
from ferlib.inference.checkpoint import checkpoint_paths, resolve_checkpoint
from ferlib.inference.pipeline import Pipeline, default_model_path, shipped_keypoint_model
from ferlib.inference.predict import PredictReport, columns_for, expand_inputs, predict
from ferlib.io import is_video
from ferlib.scale.cluster import _get, _pool_size, check_workers, start_ray

SHARD_FORMAT = 1
DEFAULT_IMAGE_BATCH = 16


# ----------------------------------------------------------------------------- predict: tasks and shards
@dataclass(frozen=True)
class Task:
    """One unit of work: a video file, or a run of consecutive images (paths as the local engine
    gives them in the `source` column)."""

    index: int
    kind: str  # "video" | "images"
    paths: tuple[str, ...]


def plan_tasks(paths: Iterable[Path], image_batch: int = DEFAULT_IMAGE_BATCH) -> list[Task]:
    """Tasks in input order: each video alone, consecutive images in batches of `image_batch`."""
    if image_batch < 1:
        raise InputError(f"--image-batch must be at least 1, got {image_batch}")
    tasks: list[Task] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            tasks.append(Task(len(tasks), "images", tuple(run)))
            run.clear()

    for p in paths:
        if is_video(p):
            close_run()
            tasks.append(Task(len(tasks), "video", (str(p),)))
        else:
            run.append(str(p))
            if len(run) >= image_batch:
                close_run()
    close_run()
    return tasks


def _checkpoint_sha(ref) -> str:
    """sha256 of a model's weights (checkpoint or exported file); the reference itself when absent."""
    if ref is None:
        ref = default_model_path()
    p = Path(str(ref))
    if p.is_file() and p.suffix not in (".json", ".safetensors"):
        return sha256_file(p)
    try:
        weights, _ = checkpoint_paths(resolve_checkpoint(ref))
        return sha256_file(weights)
    except FerError:
        return f"ref:{ref}"


@dataclass
class PredictSettings:
    """What changes predict's rows: the Pipeline's arguments and --max-frames."""

    model: str | None = None
    smoothing: str = "ema"
    keypoint_model: str | None = None
    backend: str = "auto"
    threads: int = 1
    max_frames: int | None = None
    frontalize: bool | None = None

    def pipeline_kwargs(self) -> dict:
        return {"model": self.model, "smoothing": self.smoothing, "keypoint_model": self.keypoint_model,
                "backend": self.backend, "threads": self.threads, "frontalize": self.frontalize}

    def fingerprint(self) -> str:
        """sha256 over the settings and the weights they name (not the thread count: it changes no row)."""
        blob = {"format": SHARD_FORMAT, "ferlib": __version__, "model": _checkpoint_sha(self.model),
                "keypoint_model": None if self.keypoint_model is None else _checkpoint_sha(self.keypoint_model),
                "smoothing": self.smoothing, "backend": self.backend, "max_frames": self.max_frames,
                "frontalize": self.frontalize}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def task_key(task: Task, fingerprint: str) -> str:
    """sha256 over the settings fingerprint and the task's files (path, size, mtime_ns)."""
    h = hashlib.sha256(f"{fingerprint}\n{task.kind}\n".encode())
    for p in task.paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def shard_path(shard_dir: Path, task: Task, key: str) -> Path:
    return Path(shard_dir) / f"{task.index:06d}-{key[:20]}.json"


def default_shard_dir(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


def _read_shard(path: Path) -> dict | None:
    """A finished shard's content, or None when it is absent or unreadable (then the task reruns)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SHARD_FORMAT and "rows" in data else None


class _PredictWorker:
    """A Ray actor's state: one Pipeline for the actor's life."""

    def __init__(self, cwd: str, settings: PredictSettings):
        if os.path.isdir(cwd):  # relative inputs and sources as the driver sees them
            os.chdir(cwd)
        self.settings = settings
        self.pipe = Pipeline(**settings.pipeline_kwargs())

    def info(self) -> dict:
        p = self.pipe
        return {"classes": list(p.classes), "name": p.name, "model_path": str(p.model_path or "in memory"),
                "backend": p.backend, "fallback": p.fallback.name if p.fallback else None,
                "smoothing": p.smoother.kind, "pid": os.getpid(), "host": socket.gethostname()}

    def run(self, task: Task) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        report = predict(list(task.paths), self.pipe, max_frames=self.settings.max_frames)
        return {"format": SHARD_FORMAT, "index": task.index, "kind": task.kind, "paths": list(task.paths),
                "classes": list(self.pipe.classes), "rows": report.table.to_dict("records"),
                "errors": report.errors, "frames": int(len(report.table.drop_duplicates(["source", "frame"]))),
                "seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "host": socket.gethostname(),
                "pid": os.getpid()}


@dataclass
class RayPredictRun:
    """What predict_ray did: the report, the model info, and counts and times of the run."""

    report: PredictReport
    info: dict
    tasks: int
    skipped: int
    workers: int
    startup_s: float
    compute_s: float
    frames: int
    shard_dir: Path
    cpu_s: float = 0.0  # CPU seconds (every thread) the actors spent on this run's tasks
    task_s: float = 0.0  # wall seconds of those tasks, summed over the actors (cpu_s / task_s: the CPU they got)


def predict_ray(inputs: Iterable, settings: PredictSettings, shard_dir: Path, *, address: str | None = None,
                workers: int | None = None, image_batch: int = DEFAULT_IMAGE_BATCH,
                progress: bool = True) -> RayPredictRun:
    """`ferlib.inference.predict.predict` over a Ray actor pool, resumable through `shard_dir`.

    Returns the same DataFrame as the local engine (rows in input order). Tasks whose shard exists
    are not recomputed. A failing task (a crash inside an actor; unreadable files are reported
    rows, not failures) stops the run with a FerError; the shards written so far stay."""
    check_workers(workers)
    paths = list(expand_inputs(inputs))
    tasks = plan_tasks(paths, image_batch)
    fingerprint = settings.fingerprint()
    shard_dir = Path(shard_dir)
    shard_files = {t.index: shard_path(shard_dir, t, task_key(t, fingerprint)) for t in tasks}
    shards: dict[int, dict] = {}
    for t in tasks:
        data = _read_shard(shard_files[t.index])
        if data is not None:
            shards[t.index] = data
    todo = [t for t in tasks if t.index not in shards]
    info: dict = next(iter(shards.values()), {}).get("info", {}) if shards else {}
    t0 = time.perf_counter()
    startup = compute = 0.0
    n_workers = 0
    if todo or not tasks:
        ray, started = start_ray(address, workers)
        actors: list = []
        try:
            n_workers = _pool_size(ray, workers, max(len(todo), 1))
            actor_cls = ray.remote(num_cpus=1, max_restarts=0)(_PredictWorker)
            actors = [actor_cls.remote(os.getcwd(), settings) for _ in range(n_workers)]
            info = _get(ray, actors[0].info.remote(), "starting a worker")
            for a in actors[1:]:
                _get(ray, a.info.remote(), "starting a worker")
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            _run_tasks(ray, actors, todo, shards, shard_files, info, progress, sum(len(t.paths) for t in tasks))
            compute = time.perf_counter() - t1
        finally:
            for a in actors:  # their CPUs back to the cluster at once
                ray.kill(a)
            if started:
                ray.shutdown()
    classes = info.get("classes") or next(iter(shards.values()))["classes"]
    rows: list[dict] = []
    errors: list[str] = []
    for t in tasks:
        rows += shards[t.index]["rows"]
        errors += shards[t.index]["errors"]
    df = pd.DataFrame(rows, columns=columns_for(classes))
    df = df.astype({"frame": int, "face": int, "detected": int})
    frames = sum(int(shards[t.index].get("frames", 0)) for t in todo)
    cpu = sum(float(shards[t.index].get("cpu_s", 0.0)) for t in todo)
    task_s = sum(float(shards[t.index].get("seconds", 0.0)) for t in todo)
    return RayPredictRun(PredictReport(df, errors), info, len(tasks), len(tasks) - len(todo), n_workers,
                         startup, compute, frames, shard_dir, cpu, task_s)


def _run_tasks(ray, actors, todo: list[Task], shards: dict, shard_files: dict, info: dict, progress: bool,
               total_files: int) -> None:
    """Keep every actor busy (one task in flight each); write each finished task's shard at once."""
    queue = list(todo)
    running: dict = {}
    done_files = total_files - sum(len(t.paths) for t in todo)
    bar = tqdm(total=total_files, initial=done_files, disable=not progress, desc="predict (ray)", unit="file",
               smoothing=0.1, mininterval=0.5, file=sys.stderr)

    def submit(actor) -> None:
        if queue:
            task = queue.pop(0)
            running[actor.run.remote(task)] = (actor, task)

    try:
        for a in actors:
            submit(a)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(ready[0])
            result = _get(ray, ready[0], f"predicting on {', '.join(task.paths[:3])}"
                                         f"{' ...' if len(task.paths) > 3 else ''}")
            result["info"] = info
            atomic_write_bytes(shard_files[task.index], json.dumps(result, default=json_default).encode())
            shards[task.index] = result
            bar.update(len(task.paths))
            submit(actor)
    finally:  # tasks still running stop with their actors (at shutdown, or when this driver goes)
        bar.close()


def write_csv(df: pd.DataFrame, out: Path) -> None:
    """The CSV exactly as the local engine writes it (atomically)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_bytes(Path(out), buf.getvalue().encode("utf-8"))


def remove_shards(run: RayPredictRun) -> None:
    """Delete the shard files of a finished run (and the folder when it is left empty)."""
    for f in run.shard_dir.glob("*.json"):
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run.shard_dir.rmdir()


def predict_command(args) -> int:
    """`ferlib predict --engine ray`: the local command's output and messages, over Ray."""
    out = Path(args.out)
    kp = {"auto": shipped_keypoint_model(), "none": None}.get(args.keypoint_model, args.keypoint_model)
    model = args.model
    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())
    settings = PredictSettings(model=model, smoothing=args.smoothing,
                               keypoint_model=None if kp is None else str(Path(kp).resolve()),
                               backend=args.backend, threads=args.threads, max_frames=args.max_frames,
                               frontalize=False if args.no_frontalize else None)
    shard_dir = Path(args.shard_dir) if args.shard_dir else default_shard_dir(out)
    run = predict_ray(args.inputs, settings, shard_dir, address=args.address, workers=args.workers,
                      image_batch=args.image_batch, progress=True)
    i = run.info
    if i:
        fb = f"; faces without landmarks: {i['fallback']}" if i.get("fallback") else ""
        print(f"model: {i['name']} ({i['model_path']}, {i['backend']}, {args.threads} thread(s){fb}), classes: "
              f"{', '.join(i['classes'])}; video smoothing: {i['smoothing']}", file=sys.stderr)
    write_csv(run.report.table, out)
    df = run.report.table
    print(f"wrote {len(df)} rows ({int(df['detected'].sum())} faces, {int((df['detected'] == 0).sum())} frames "
          f"without a face) to {args.out}", file=sys.stderr)
    print(f"ray: {run.tasks} tasks ({run.skipped} done before, from {run.shard_dir}), {run.workers} worker(s); "
          f"cluster and workers ready in {run.startup_s:.2f} s; {run.frames} frames/images in {run.compute_s:.2f} s"
          + (f" ({run.frames / run.compute_s:.1f}/s)" if run.compute_s > 0 else ""), file=sys.stderr)
    if args.keep_shards:
        print(f"shards kept in {run.shard_dir}", file=sys.stderr)
    else:
        remove_shards(run)
    for e in run.report.errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if run.report.errors else 0


