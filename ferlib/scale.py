"""Scale-out on Ray: `ferlib predict --engine ray` and `ferlib extract --engine ray`.

An actor pool: each Ray actor (one CPU) owns one `ferlib.pipeline.Pipeline` (predict) or one
static-mode LandmarkExtractor (extract) for its whole life - MediaPipe graphs are not thread-safe
and take a second to build, so they are made once per actor, never per task.

predict: the inputs are expanded exactly as the local engine does (`ferlib.predict.expand_inputs`)
and cut into tasks - one task per video file, runs of consecutive images in batches of
`image_batch` - and each task runs `ferlib.predict.predict` on an actor. The local engine resets the
pipeline before every file (tracking and smoothing never cross files), so a task per video and
images in any grouping give the very rows of the local engine: same rows, labels and
probabilities, same CSV bytes. Every finished task is written atomically as a JSON shard to the
shard folder (default `<out>.shards/`), named by the task's position and a key over the model,
the settings and the task's files (path, size, mtime); a rerun after a crash or kill skips the
tasks whose shard is there, and the CSV is assembled from the shards in input order.

extract: the landmark cache is the resume mechanism already (ferlib.data.cache writes a shard every
`shard_size` new results); `RayExtractRunner` only replaces its process pool by actors that run
the same per-image function, so cached entries are identical to a local run's.

Ray is imported only here, inside `start_ray`, and only when the ray engine is used. A local
cluster (no --address) gets `num_cpus` = workers, no dashboard, no usage statistics, and binds
to 127.0.0.1 only (Ray's single-machine mode, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); run from a
source checkout, its workers get the checkout on PYTHONPATH, so a `ferlib/` folder in the working
directory (which Ray puts on their sys.path) cannot shadow the package (`_import_path_env`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ferlib import __version__, errors, locations
from ferlib.checkpoint import checkpoint_paths, resolve_checkpoint
from ferlib.data import cache as landmark_cache
from ferlib.errors import FerError, InputError
from ferlib.fsutil import atomic_write_bytes, json_default, sha256_file
from ferlib.io import is_video
from ferlib.pipeline import Pipeline, default_model_path, shipped_keypoint_model
from ferlib.predict import PredictReport, columns_for, expand_inputs, predict

ENGINES = ("local", "ray")
SHARD_FORMAT = 1
DEFAULT_IMAGE_BATCH = 16
CONNECT_TIMEOUT_S = 5.0


class RayMissingError(InputError):
    """--engine ray without ray installed."""


# ----------------------------------------------------------------------------- the cluster
def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")


def _check_address(address: str) -> None:
    """A clear error when a cluster address does not answer (ray.init would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise InputError(f"--address {address}: cannot reach the Ray cluster ({e.strerror or e}); start it with "
                         "`ray start --head` there, or leave --address out for a local cluster") from None


def _import_path_env() -> dict[str, str]:
    """PYTHONPATH for a local cluster's workers when ferlib runs from a source checkout (./setup.sh's
    editable install): the checkout first, the driver's own PYTHONPATH after it.

    Ray puts the driver's working directory at the front of every worker's sys.path. An editable
    install is found by an import hook that runs only after sys.path has been searched, so a
    `ferlib/` folder in the working directory (an empty one, or the checkout itself seen from its
    parent folder) became a namespace package `ferlib` in the workers: "cannot import name
    '__version__' from 'ferlib' (unknown location)". With the checkout on sys.path the real
    package is found there, and a regular package wins over namespace folders wherever they are
    on the path. An installed copy (site-packages, on every worker's sys.path) needs nothing."""
    root = locations.source_root()
    if root is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set inside the block, as it was after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_ray(address: str | None, workers: int | None):
    """Import ray and connect to `address` (or start a local cluster of `workers` CPUs).
    Returns (ray, started_here)."""
    check_workers(workers)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage statistics, whoever starts the cluster
    if address:  # a cluster of machines (the Linux default), whatever an earlier local run set
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    else:  # Ray's single-machine mode: its node address is 127.0.0.1, every server binds there
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise RayMissingError("--engine ray needs Ray: pip install -e .[scale] (or the ray pin of "
                              "requirements.txt)") from None
    if address:
        _check_address(address)
    if ray.is_initialized():  # the caller's cluster (a notebook, the tests): used as it is
        return ray, False
    common: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                                  configure_logging=True)
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):  # also when ray was imported before
        constants.ENABLE_RAY_CLUSTER = bool(address)
    if address:
        env = {k: v for k, v in os.environ.items() if k.startswith("FERLIB_")}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"--address {address}: could not join the Ray cluster ({e})") from None
        return ray, True
    n = workers or min(2, os.cpu_count() or 1)
    # the local cluster's processes, and so its workers, inherit the driver's environment: PYTHONPATH
    # set while they start (a runtime_env would cost every actor a dedicated worker process, ~1-2 s)
    with _environ(_import_path_env()):
        ray.init(num_cpus=n, _node_ip_address="127.0.0.1", **common)
    bound = {node.get("NodeManagerAddress") for node in ray.nodes()}
    if bound != {"127.0.0.1"}:
        ray.shutdown()
        raise FerError(f"the local Ray cluster came up on {sorted(bound)}, not 127.0.0.1 only; not using it")
    return ray, True


def _pool_size(ray, workers: int | None, n_tasks: int) -> int:
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(n, n_tasks))


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

    def pipeline_kwargs(self) -> dict:
        return {"model": self.model, "smoothing": self.smoothing, "keypoint_model": self.keypoint_model,
                "backend": self.backend, "threads": self.threads}

    def fingerprint(self) -> str:
        """sha256 over the settings and the weights they name (not the thread count: it changes no row)."""
        blob = {"format": SHARD_FORMAT, "ferlib": __version__, "model": _checkpoint_sha(self.model),
                "keypoint_model": None if self.keypoint_model is None else _checkpoint_sha(self.keypoint_model),
                "smoothing": self.smoothing, "backend": self.backend, "max_frames": self.max_frames}
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
    """`ferlib.predict.predict` over a Ray actor pool, resumable through `shard_dir`.

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


_REMOTE_FER_ERROR = re.compile(r"^ferlib\.errors\.(\w+): (.+)$", re.MULTILINE)


def _get(ray, ref, what: str):
    """ray.get; a ferlib error raised in an actor (its constructor included) comes back as itself."""
    try:
        return ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, FerError):
            raise type(cause)(str(cause)) from None
        found = _REMOTE_FER_ERROR.findall(str(e))
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, FerError)
            raise (cls if isinstance(cls, type) and issubclass(cls, FerError) else FerError)(message) from None
        raise FerError(f"Ray worker failed while {what}: {e}") from None


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
                               backend=args.backend, threads=args.threads, max_frames=args.max_frames)
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


# ----------------------------------------------------------------------------- extract
class _ExtractWorker:
    """A Ray actor running ferlib.data.cache's per-image extraction with its own extractor."""

    def __init__(self, kwargs: dict, resize_to: int | None):
        landmark_cache._init_worker(kwargs, resize_to)

    def run(self, items: list) -> list:
        return [landmark_cache._extract_one(it) for it in items]

    def cpu_seconds(self) -> float:
        """CPU seconds (every thread) this actor's process has used."""
        return time.process_time()


class RayExtractRunner:
    """The `runner` of ferlib.data.cache.extract_landmarks on a Ray actor pool: same signature as
    its local `_run` (items, n, kwargs, resize_to, workers) -> results in any order. Actors are
    kept while the extractor settings stay the same (several datasets in one command); `close()`
    (or the `with` block's end) shuts down a cluster started here."""

    def __init__(self, address: str | None = None, workers: int | None = None, batch: int = 32):
        check_workers(workers)
        self.address, self.workers, self.batch = address, workers, batch
        self._ray: Any = None  # the ray module once the pool starts
        self._started = False
        self._actors: list[Any] = []
        self._key: str | None = None

    def _pool(self, kwargs: dict, resize_to: int | None) -> list:
        if self._ray is None:
            self._ray, self._started = start_ray(self.address, self.workers)
        key = json.dumps([kwargs, resize_to], sort_keys=True, default=str)
        if key != self._key:
            for a in self._actors:
                self._ray.kill(a)
            n = _pool_size(self._ray, self.workers, 1 << 30)
            cls = self._ray.remote(num_cpus=1, max_restarts=0)(_ExtractWorker)
            self._actors, self._key = [cls.remote(kwargs, resize_to) for _ in range(n)], key
        return self._actors

    def __call__(self, items: Iterable, n: int, kwargs: dict, resize_to: int | None,
                 workers: int | None = None) -> Iterator[tuple]:
        if n == 0:
            return
        actors = self._pool(kwargs, resize_to)
        ray = self._ray
        it = iter(items)
        running: dict = {}

        def submit(actor) -> bool:
            chunk = [x for _, x in zip(range(self.batch), it)]
            if chunk:
                running[actor.run.remote(chunk)] = actor
            return bool(chunk)

        for a in actors:  # two batches in flight per actor: no idle gap while results travel
            submit(a)
            submit(a)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(ready[0])
            results = _get(ray, ready[0], "extracting landmarks")
            submit(actor)
            yield from results

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray, self._actors, self._key = None, [], None

    def __enter__(self) -> "RayExtractRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def extract_runner(engine: str, address: str | None = None, workers: int | None = None):
    """None for the local engine (ferlib.data.cache's process pool), else a RayExtractRunner."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {ENGINES}, got {engine!r}")
    if engine == "local":
        if address:
            raise InputError("--address is for --engine ray")
        yield None
        return
    with RayExtractRunner(address, workers) as runner:
        yield runner


__all__ = ["ENGINES", "PredictSettings", "RayExtractRunner", "RayPredictRun", "Task", "default_shard_dir",
           "extract_runner", "plan_tasks", "predict_command", "predict_ray", "start_ray", "task_key", "write_csv"]
