"""The paths users run: `ferlib predict` on the clip end to end, and in process a video-mode Pipeline
per model x thread count over the clip and a static one over a five-face group photo, interleaved."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ferlib import locations
from ferlib.bench.config import PATH_ROLES, BenchConfig
from ferlib.bench.timing import log, no_gc, spread, timed_mesh_frames
from ferlib.errors import InputError
from ferlib.faces.crops import square_crop
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.inference.pipeline import Pipeline
from ferlib.inference.runtime import set_torch_threads
from ferlib.types import largest_face


def predict_cli(clip: Path, model: str | None, threads: int, max_frames: int | None, out: Path) -> dict:
    """`python -m ferlib predict CLIP --threads T` as a user runs it; wall time measured outside,
    the frame loop's time read from the command's own `timing:` line."""
    cmd = [sys.executable, "-m", "ferlib", "predict", str(clip), "--out", str(out), "--threads", str(threads)]
    cmd += ["--model", model] if model else []
    cmd += ["--max-frames", str(max_frames)] if max_frames else []
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    cwd = locations.source_root() or Path.cwd()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    m = re.search(r"timing: model and graphs ready in ([\d.]+) s; (\d+) frames/images in ([\d.]+) s", r.stderr)
    if r.returncode != 0 or m is None:
        raise InputError(f"ferlib predict failed in the benchmark (rc {r.returncode}): {r.stderr[-1500:]}")
    ready, n, loop = float(m.group(1)), int(m.group(2)), float(m.group(3))
    backend = re.search(r"model: \S+ \([^,]+, (\w+),", r.stderr)
    return {"wall_s": wall, "startup_s": wall - loop, "ready_s": ready, "frames": n, "loop_s": loop,
            "ms_per_frame": 1e3 * loop / n, "backend": backend.group(1) if backend else "?"}


def group_photo(frames, ex) -> np.ndarray:
    """Five faces on a 600x400 grid (3 + 2), cut from five clip frames spread over the clip."""
    group = np.full((400, 600, 3), 90, np.uint8)
    picks = np.linspace(0, len(frames) - 1, 5).astype(int)
    for j, i in enumerate(picks):
        bgr = frames[i][2]
        ex.reset()
        faces = ex.process(bgr)
        face = largest_face(faces)
        if face is None:
            raise InputError(f"no face in clip frame {i} for the group photo")
        x0, y0, x1, y1 = face.box
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
    import mediapipe as mp  # seconds to import: only the sections that run its plain face mesh load it

    models = {r: m for r, m in PATH_ROLES.items()}
    keys = [(r, t) for r in models for t in cfg.threads]
    pipes = {k: Pipeline(models[k[0]], threads=k[1], mode="video") for k in keys}
    statics = {k: Pipeline(models[k[0]], threads=k[1], mode="static") for k in keys}
    names = {r: pipes[(r, cfg.threads[0])].name for r in models}
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    with LandmarkExtractor(mode="static", mesh=False) as ex:
        group = group_photo(frames, ex)
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
                    log(f"paths round {rnd + 1}/{cfg.path_rounds}: ferlib predict, {k[0]} model, {k[1]} thread(s)")
                    runs[k].append(predict_cli(cfg.clip, models[k[0]], k[1], cfg.frames, Path(d) / "p.csv"))
                log(f"paths round {rnd + 1}/{cfg.path_rounds}: in-process pass, {len(keys)} pipelines + face mesh")
                for p in pipes.values():
                    p.reset()
                with no_gc():
                    n = 0
                    for ts, bgr, decode_ms, mesh_ms in timed_mesh_frames(cfg.clip, cfg.frames, mesh):
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
