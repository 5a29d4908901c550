"""Measure face-landmark detection rates on FER2013 and extraction speed on the fixture clip.

FER2013 (read straight from ../shared/data/fer2013.zip), per split:
  as_is     - MediaPipe face mesh (static, refined) on the 48x48 image as it is;
  extractor - ferlib's LandmarkExtractor(mode="static"): upscale to 192 px + black pad,
              short-range BlazeFace, mesh of the crop, falling back to meshing the whole padded image;
  blazeface - share of images where BlazeFace itself found the face (the rest came from the fallback).
Invariance: tests/fixtures/clip_landmarks.npy (12 real faces) under 50 random similarity transforms
each (yaw +-60, pitch/roll +-30 deg, scale 0.5-2, shift +-200 px): |normalised - unrotated| per
method, and head-pose error on the faces frontalised first.
Clip: ms/frame of LandmarkExtractor(mode="video") (static mesh per crop) against a variant that
keeps a tracking face mesh (static_image_mode=False) fed with the same crops, and their mean
landmark difference in pixels.

  nice -n 10 .venv/bin/python scripts/measure_detection.py [--per-split N] [--splits PrivateTest ...]
"""
from __future__ import annotations

import argparse
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.io import iter_video, load_image  # noqa: E402

FER_ZIP = ROOT.parent / "shared" / "data" / "fer2013.zip"
CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def fer_rates(split: str, limit: int | None) -> dict:
    import mediapipe as mp

    with zipfile.ZipFile(FER_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.startswith(f"fer2013/{split}/") and n.endswith(".jpg"))
        if limit and limit < len(names):  # an even sample over the sorted (class-grouped) list
            names = [names[i] for i in np.linspace(0, len(names) - 1, limit).round().astype(int)]
        raw = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
        n_raw = n_ext = n_det = n_09 = 0
        t0 = time.perf_counter()
        with LandmarkExtractor(mode="static", max_faces=1) as ex:
            for n in names:
                img = load_image(z.read(n))
                n_raw += raw.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).multi_face_landmarks is not None
                faces = ex.process(img)
                n_ext += bool(faces)
                n_det += bool(faces) and faces[0].score > 0
                n_09 += bool(faces) and faces[0].score >= 0.9
        raw.close()
    k = len(names)
    return {"split": split, "images": k, "as_is": n_raw / k, "extractor": n_ext / k, "blazeface": n_det / k, "score09": n_09 / k,
            "s": time.perf_counter() - t0}


class _TrackedVariant(LandmarkExtractor):
    """Video mode with one tracking (static_image_mode=False) face mesh for the (single) face."""

    def __init__(self):
        super().__init__(mode="video", max_faces=1, tracking=False)
        import mediapipe as mp

        self._mesh.close()
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)


def clip_speed() -> dict:
    """Both variants on every frame, interleaved so that load from other processes hits both alike;
    wall ms and process CPU ms (all threads) per frame."""
    frames = [f for _, _, f in iter_video(CLIP)]
    variants = {"static mesh per crop": LandmarkExtractor(mode="video", tracking=False), "tracking mesh": _TrackedVariant()}
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    pts = {k: [] for k in variants}
    for i, f in enumerate(frames):
        for name, ex in variants.items():
            t, c = time.perf_counter(), time.process_time()
            faces = ex.process(f, timestamp_ms=i * 1000 / 23.976)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            pts[name].append(faces[0].landmarks if faces else None)
    out = {}
    for name, ex in variants.items():
        ex.close()
        out[name] = {"wall_ms_median": 1000 * float(np.median(wall[name])),
                     "cpu_ms_mean": 1000 * float(np.mean(cpu[name])),
                     "found": sum(x is not None for x in pts[name]) / len(frames)}
    both = [(a, b) for a, b in zip(*pts.values()) if a is not None and b is not None]
    out["mean_px_difference"] = float(np.mean([np.abs(a[:, :2] - b[:, :2]).mean() for a, b in both]))
    out["frames"] = len(frames)
    return out


def invariance(trials: int = 50) -> dict:
    from ferlib.faces import normalize as N

    faces = np.load(ROOT / "tests" / "fixtures" / "clip_landmarks.npy").astype(np.float64)
    rng = np.random.default_rng(0)
    err = {m: [] for m in N.METHODS}
    pose_err = []
    for p in faces:
        ref = {m: N.normalize(p, m) for m in N.METHODS}
        frontal = N.similarity_align(p) * 150
        c = p.mean(0)
        for _ in range(trials):
            ang = (rng.uniform(-60, 60), rng.uniform(-30, 30), rng.uniform(-30, 30))
            R, s, t = N.rotation_matrix(*ang), rng.uniform(0.5, 2), rng.uniform(-200, 200, 3)
            q = s * (p - c) @ R.T + c + t
            for m in N.METHODS:
                err[m].append(np.abs(N.normalize(q, m) - ref[m]))
            pose_err.append(np.abs(np.subtract(N.head_pose(s * frontal @ R.T + t), ang)))
    out = {m: {"mean": float(np.mean(e)), "max": float(np.max(e))} for m, e in err.items()}
    pe = np.array(pose_err)
    out["head_pose_deg"] = {"mean (yaw, pitch, roll)": pe.mean(0).round(2).tolist(), "max": float(pe.max())}
    out["transforms"] = len(faces) * trials
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", nargs="*", default=["PrivateTest", "PublicTest", "Training"])
    ap.add_argument("--per-split", type=int, default=None, help="even sample of at most N images per split")
    ap.add_argument("--no-clip", action="store_true")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    print("invariance:", invariance(), flush=True)
    if not a.no_clip:
        print("clip:", clip_speed(), flush=True)
    if FER_ZIP.exists():
        print("| split | images | mesh as-is | extractor (upscale+pad) | of which BlazeFace | score >= 0.9 |")
        print("|---|---|---|---|---|---|")
        for s in a.splits:
            r = fer_rates(s, a.per_split)
            print(f"| {r['split']} | {r['images']} | {r['as_is']:.1%} | {r['extractor']:.1%} | {r['blazeface']:.1%} "
                  f"| {r['score09']:.1%} |"
                  f"  ({r['s']:.0f} s)", flush=True)
    else:
        print(f"{FER_ZIP} absent: FER2013 rates skipped")


if __name__ == "__main__":
    main()
