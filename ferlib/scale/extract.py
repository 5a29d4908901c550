"""`ferlib extract --engine ray`: the landmark cache's per-image work on Ray actors."""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ferlib.data import cache as landmark_cache
from ferlib.errors import InputError
from ferlib.scale.cluster import ENGINES, _get, _pool_size, check_workers, start_ray


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


