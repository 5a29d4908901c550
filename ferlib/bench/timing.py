"""Timing helpers every benchmark family uses: spreads of samples, timed calls, the timed decode +
face-mesh frame loop, progress lines."""
from __future__ import annotations

import gc
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ferlib.errors import InputError
from ferlib.io import iter_video


def spread(samples_ms) -> dict:
    """Median, p10, p90 and count of timing samples in ms."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise InputError("no timing samples to summarise")
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return {"median_ms": float(med), "p10_ms": float(p10), "p90_ms": float(p90), "n": int(a.size)}


@contextmanager
def no_gc() -> Iterator[None]:
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
    with no_gc():
        end = time.perf_counter() + seconds
        while len(out) < min_iters or (time.perf_counter() < end and len(out) < max_iters):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def timed_mesh_frames(clip: Path, max_frames: int | None, mesh) -> Iterator[tuple[float, np.ndarray, float, float]]:
    """(timestamp, BGR frame, decode ms, face-mesh ms) for each frame of `clip`: decoding and a
    MediaPipe face mesh (`mesh`, a FaceMesh graph) alone, the floor every pipeline is measured against."""
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


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
