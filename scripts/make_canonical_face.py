"""Regenerate ferlib/assets/canonical_face.npy and ferlib/assets/mirror_permutation.npy.

Canonical face = generalised Procrustes mean of frontal, neutral faces:
  1. landmarks of FER2013 Training/neutral images (first --fer-count in name order, upscaled and
     padded as the extractor does) and/or every 2nd frame of the committed fixture clip;
  2. GPA (Umeyama similarity alignment to the running mean) of all of them, rotated to the faces'
     mean orientation -> bootstrap mean;
  3. orient it: x = normal of the least-squares plane through MediaPipe's midline landmarks
     (yaw/roll 0 by symmetry), pitch kept as the faces' mean pitch, y down, z = x cross y;
  4. keep faces within --max-angle degrees of that mean (yaw, pitch, roll), GPA again, orient;
  5. mirror permutation: optimal assignment of each point to the nearest mirrored point (x -> -x),
     checked to be an involution; symmetrise the mean with it; centre; unit RMS radius.
Deterministic for the same inputs. Also writes tests/fixtures/clip_landmarks.npy (float32
(12, 478, 3): the fixture clip's frames 0, 40, ..., 440 in static mode) for the fast tests.
Usage:
  nice -n 10 .venv/bin/python scripts/make_canonical_face.py [--source fer|clip|both]
"""
from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]

from ferlib.faces.landmarks import LandmarkExtractor  # noqa: E402
from ferlib.faces.normalize import CANONICAL_PATH, MIRROR_PATH, _angles, _umeyama  # noqa: E402
from ferlib.fsutil import atomic_write_bytes  # noqa: E402
from ferlib.io import iter_video, load_image  # noqa: E402

CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
CLIP_LANDMARKS = ROOT / "tests" / "fixtures" / "clip_landmarks.npy"
FIXTURE_FRAMES = tuple(range(0, 480, 40))
FER_ZIP = ROOT.parent / "shared" / "data" / "fer2013.zip"
# Landmarks on the face's vertical midline in MediaPipe's topology (nose bridge, lips, chin, forehead).
MIDLINE = (0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152, 164, 168,
           175, 195, 197, 199, 200)


def clip_faces() -> list[np.ndarray]:
    out = []
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for i, _, frame in iter_video(CLIP):
            if i % 2 == 0:
                out += [f.landmarks for f in ex.process(frame)]
    return out


def fixture_landmarks() -> np.ndarray:
    out = []
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for i, _, frame in iter_video(CLIP, max_frames=FIXTURE_FRAMES[-1] + 1):
            if i in FIXTURE_FRAMES:
                faces = ex.process(frame)
                if len(faces) != 1:
                    raise SystemExit(f"expected one face on frame {i} of {CLIP}, found {len(faces)}")
                out.append(faces[0].landmarks)
    return np.asarray(out, dtype=np.float32)


def fer_faces(count: int) -> list[np.ndarray]:
    out = []
    with zipfile.ZipFile(FER_ZIP) as z, LandmarkExtractor(mode="static", max_faces=1) as ex:
        names = sorted(n for n in z.namelist() if n.startswith("fer2013/Training/neutral/") and n.endswith(".jpg"))
        for n in names[:count]:
            out += [f.landmarks for f in ex.process(load_image(z.read(n)))]
    return out


def unit(p: np.ndarray) -> np.ndarray:
    p = p - p.mean(0)
    return p / np.sqrt((p ** 2).sum(1).mean())


def gpa(faces: np.ndarray, init: np.ndarray, iters: int = 20) -> np.ndarray:
    mean = unit(init)
    for _ in range(iters):
        aligned = []
        for f in faces:
            s, R, t = _umeyama(f, mean)
            aligned.append(s * f @ R.T + t)
        new = unit(np.mean(aligned, 0))
        s, R, t = _umeyama(new, mean)  # keep the mean's orientation from drifting
        new = unit(s * new @ R.T + t)
        done = np.abs(new - mean).max() < 1e-7
        mean = new
        if done:
            break
    # Give the mean the faces' average orientation (GPA leaves it at the initial face's).
    rots = Rotation.from_matrix([_umeyama(mean, f)[1] for f in faces])
    return unit(mean @ rots.mean().as_matrix().T)


def orient(mean: np.ndarray) -> np.ndarray:
    mid = mean[list(MIDLINE)]
    x = np.linalg.svd(mid - mid.mean(0))[2][-1]
    if x @ (mean[263] - mean[33]) < 0:  # subject's right eye (33) is on the image's left
        x = -x
    y = np.array([0.0, 1.0, 0.0]) - x[1] * x
    y /= np.linalg.norm(y)
    R = np.stack([x, y, np.cross(x, y)])
    out = unit(mean @ R.T)
    assert out[1, 2] < out[[33, 263], 2].mean(), "nose tip must be nearer the camera than the eye corners"
    return out


def mirror_permutation(face: np.ndarray) -> np.ndarray:
    mirrored = face * (-1, 1, 1)
    cost = np.linalg.norm(face[:, None] - mirrored[None], axis=2)
    rows, perm = linear_sum_assignment(cost)
    assert np.array_equal(rows, np.arange(len(face)))
    if not np.array_equal(perm[perm], np.arange(len(face))):
        raise SystemExit("mirror assignment is not an involution: the mean face is not symmetric enough")
    return perm


def pose_of(face: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    _, R, _ = _umeyama(ref, face)  # ref -> face rotation = the face's pose relative to ref
    return _angles(R)


def save(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=("fer", "clip", "both"), default="fer")
    ap.add_argument("--fer-count", type=int, default=1500)
    ap.add_argument("--max-angle", type=float, default=10.0)
    a = ap.parse_args()
    faces = []
    if a.source in ("fer", "both"):
        if not FER_ZIP.exists():
            raise SystemExit(f"{FER_ZIP} is absent: use --source clip")
        faces += fer_faces(a.fer_count)
    if a.source in ("clip", "both"):
        faces += clip_faces()
    faces = np.asarray(faces, dtype=np.float64)
    print(f"{len(faces)} faces from {a.source}")
    mean = orient(gpa(faces, faces[0]))
    poses = np.array([pose_of(f, mean) for f in faces])
    keep = np.abs(poses).max(1) <= a.max_angle
    print(f"{keep.sum()} faces within {a.max_angle} deg of the bootstrap mean")
    mean = orient(gpa(faces[keep], mean))
    perm = mirror_permutation(mean)
    sym = unit((mean + (mean * (-1, 1, 1))[perm]) / 2)
    asym = np.abs(sym - mean).max()
    print(f"fixed points of the mirror permutation: {(perm == np.arange(len(perm))).sum()}; "
          f"max symmetrisation shift {asym:.4f} (RMS radius 1)")
    save(CANONICAL_PATH, sym.astype(np.float64))
    save(MIRROR_PATH, perm.astype(np.int64))
    save(CLIP_LANDMARKS, fixture_landmarks())
    print(f"wrote {CANONICAL_PATH}, {MIRROR_PATH} and {CLIP_LANDMARKS}")


if __name__ == "__main__":
    main()
