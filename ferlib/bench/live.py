"""The live path: MediaPipe alone, pipeline FPS per batch size and thread count, and the per-frame
stage breakdown (with the Live page's overlay drawing), all interleaved frame by frame."""
from __future__ import annotations

import time

import numpy as np
import torch

from ferlib.bench.config import BenchConfig
from ferlib.bench.roles import Runners
from ferlib.bench.timing import log, no_gc, spread, timed_mesh_frames
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.inference.draw import draw_result
from ferlib.inference.pipeline import Pipeline
from ferlib.types import FrameResult


def bench_live(cfg: BenchConfig, roles: dict, runners: Runners, backend_for: dict) -> tuple[list, list, list]:
    """MediaPipe alone, pipeline FPS and the stage breakdown, interleaved frame by frame over the clip
    (a change of machine load hits every configuration alike). Per frame: decode once; MediaPipe's
    face mesh alone; per model its own LandmarkExtractor (detect + mesh, timed), then for every
    thread count x batch size its own Pipeline, which collects the faces and classifies those of
    `batch` frames in one `Pipeline.predict_frames` call (prepare + model). A configuration's
    per-frame time = decode + the model's detect/mesh time of that frame + its share of its batch's
    prepare + model time. Returns (mesh_alone rows, pipeline rows, stage rows); the stage rows
    (batch 1, first thread count) add the Live page's overlay drawing."""
    import mediapipe as mp  # seconds to import: only the sections that run its plain face mesh load it

    keys = [(role, t, b) for role in roles for t in cfg.threads for b in cfg.batches]
    drawn = {role: (role, cfg.threads[0], cfg.batches[0]) for role in roles}
    extractors = {role: LandmarkExtractor(mode="video") for role in roles}
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    pipes = {k: Pipeline(runners(k[0], backend_for[k[0]], k[1]), extractor=extractors[k[0]]) for k in keys}

    def one_pass(max_frames: int | None) -> dict:
        t: dict = {"decode": [], "mesh": [], **{("landmarks", r): [] for r in roles},
                   **{("draw", r): [] for r in roles},
                   **{("prepare", k): [] for k in keys}, **{("model", k): [] for k in keys}}
        chunks: dict[tuple, list] = {k: [] for k in keys}
        n_faces = dict.fromkeys(keys, 0)

        def flush(k) -> None:
            pipe, chunk = pipes[k], chunks[k]
            torch.set_num_threads(k[1])
            timings: dict[str, float] = {}
            per_frame = pipe.predict_frames(chunk, timings)
            prep, model = timings.get("prepare", 0.0), timings.get("model", 0.0)
            for (bgr, _), preds in zip(chunk, per_frame):
                t[("prepare", k)].append(prep / len(chunk))
                t[("model", k)].append(model / len(chunk))
                if k == drawn[k[0]]:
                    t0 = time.perf_counter()
                    draw_result(bgr.copy(), FrameResult(predictions=preds))
                    t[("draw", k[0])].append((time.perf_counter() - t0) * 1e3)
                n_faces[k] += len(preds)
            chunk.clear()

        for p in pipes.values():
            p.reset()
        with no_gc():
            for ts, bgr, decode_ms, mesh_ms in timed_mesh_frames(cfg.clip, max_frames, mesh):
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
        log(f"live pipelines, warm-up ({cfg.warmup_frames} frames)")
        one_pass(cfg.warmup_frames)
        log(f"live pipelines: {len(keys)} configurations and MediaPipe alone, interleaved per frame")
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
