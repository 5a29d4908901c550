"""Landmark extraction over a dataset with a content-keyed cache, and a face-crop cache.

Cache layout: ``<cache dir>/<settings hash>/*.npz`` shards (default ``<cache>/landmarks``: see
ferlib.locations, ``$FERLIB_CACHE`` or ``$FERLIB_HOME/cache``). The settings hash covers the
extractor's arguments and tuning constants, the MediaPipe version, `resize_to` and the cache
format, so a changed setting never reuses stale results. Within it, an entry's key is the sha256
of the image's bytes (file or zip member, or the decoded pixels of csv rows). Shards are written
atomically every `shard_size` new results, so an interrupted run keeps what it had done and a
re-run only hashes the images.

Both take the rows as a DataFrame (a Dataset's ``table``) and its ``resize_to`` as an argument: the
rule in `ferlib.data.dataset`.
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ferlib import locations
from ferlib.errors import FerError, InputError
from ferlib.faces import landmarks as lm
from ferlib.faces import realign
from ferlib.faces.crops import framed_crop, turned
from ferlib.faces.detection import SMALL_SIDE
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.fsutil import atomic_write_bytes, sha256_bytes, sha256_file
from ferlib.inference.checkpoint import checkpoint_paths
from ferlib.inference.keypoints import load_realigner
from ferlib.io import ensure_bgr, image_size, load_image
from ferlib.types import Face, largest_face

from .importers import read_bytes, resize_square

CACHE_FORMAT = 1
NUM_LANDMARKS = 478
DEFAULT_EXTRACTOR = {"mode": "static", "max_faces": 5, "keep_unmeshed": False}  # landmarks or nothing
ProgressCallback = Callable[[int, int], None]


def default_cache_dir(kind: str = "landmarks") -> Path:
    """``$FERLIB_CACHE/<kind>`` if FERLIB_CACHE is set, else ``<FERLIB_HOME>/cache/<kind>``."""
    return locations.cache_dir(kind)


# ----------------------------------------------------------------------------- content keys
def _payload(row: Any) -> bytes | np.ndarray:
    image = row.get("image") if hasattr(row, "get") else None
    return image if isinstance(image, np.ndarray) else read_bytes(str(row["path"]))


def content_key(payload: bytes | np.ndarray) -> str:
    """sha256 hex of encoded image bytes, or of a decoded array's shape, dtype and pixels."""
    if isinstance(payload, np.ndarray):
        a = np.ascontiguousarray(payload)
        return sha256_bytes(f"array{a.shape}{a.dtype}".encode() + a.tobytes())
    return sha256_bytes(payload)


def _decode(payload: bytes | np.ndarray, resize_to: int | None, name: str) -> np.ndarray:
    try:
        img = ensure_bgr(payload, name=name) if isinstance(payload, np.ndarray) else load_image(payload)
    except InputError as e:
        raise InputError(f"image {name}: {str(e).partition(': ')[2] or e}") from None
    return resize_square(img, resize_to) if resize_to else img


# ----------------------------------------------------------------------------- shard store
class ShardStore:
    """Append-only ``.npz`` shards of per-key arrays in one folder (atomic writes)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self) -> tuple[dict[str, int], dict[str, np.ndarray]]:
        """(key -> row, arrays) over every readable shard; unreadable shards are skipped with a warning."""
        keys: list[np.ndarray] = []
        arrays: dict[str, list[np.ndarray]] = {}
        for shard in sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []:
            try:
                with np.load(shard, allow_pickle=False) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError) as e:
                warnings.warn(f"cache shard {shard} is unreadable and is ignored ({e})", stacklevel=2)
                continue
            keys.append(data.pop("keys"))
            for k, v in data.items():
                arrays.setdefault(k, []).append(v)
        if not keys:
            return {}, {}
        all_keys = np.concatenate(keys)
        index = {str(k): i for i, k in enumerate(all_keys)}  # later shards win on duplicates
        # an array some shards lack (written by another version) is left out, never misaligned
        return index, {k: np.concatenate(v) for k, v in arrays.items() if len(v) == len(keys)}

    def write(self, keys: list[str], **arrays: np.ndarray) -> Path:
        """Write one shard atomically; returns its path."""
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(keys, dtype="U64"), **arrays)
        path = self.folder / f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        atomic_write_bytes(path, buf.getvalue())
        return path


def _settings_dir(root: Path, settings: dict) -> Path:
    blob = json.dumps(settings, sort_keys=True).encode()
    return root / sha256_bytes(blob)[:16]


def extractor_settings(extractor_kwargs: dict | None = None, resize_to: int | None = None) -> dict:
    """Everything that changes extracted landmarks: the cache's settings key."""
    import mediapipe

    kwargs = {**DEFAULT_EXTRACTOR, **(extractor_kwargs or {})}
    if kwargs.get("keypoint_model") is not None:  # the regressor's weights, not where they lie
        kwargs["keypoint_model"] = "sha256:" + sha256_file(checkpoint_paths(kwargs["keypoint_model"])[0])
        kwargs["realign"] = {k: np.asarray(getattr(realign, k)).tolist() for k in dir(realign)
                             if k.isupper() and isinstance(getattr(realign, k), (int, float, tuple, np.ndarray))}
    # The front end's tuning numbers (FRONT_END, margins, sizes): upper-case ints and floats of
    # ferlib.faces.landmarks; bools are flags such as typing.TYPE_CHECKING, not settings.
    consts = {k: v for k in dir(lm) if k.isupper()
              and isinstance(v := getattr(lm, k), (int, float)) and not isinstance(v, bool)}
    return {"format": CACHE_FORMAT, "extractor": kwargs, "constants": consts,
            "mediapipe": mediapipe.__version__, "resize_to": resize_to}


# ----------------------------------------------------------------------------- extraction
@dataclass
class Extraction:
    """Landmarks of a dataset, row-aligned with its DataFrame.

    landmarks: (N, 478, 3) float32 pixel coordinates of the (resized) image, NaN where no face.
    detected: (N,) bool. score: (N,) float32 detector score (0 for whole-image mesh fallback,
    NaN for misses). box: (N, 4) float32. errors: path -> reason for unreadable images (counted
    as misses, never cached). summary: images / detected / rate per split and label, with totals.
    """

    landmarks: np.ndarray
    detected: np.ndarray
    score: np.ndarray
    box: np.ndarray
    summary: pd.DataFrame
    errors: dict[str, str] = field(default_factory=dict)
    n_cached: int = 0
    n_extracted: int = 0
    seconds: float = 0.0

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if len(self.detected) else float("nan")


def detection_summary(df: pd.DataFrame, detected: np.ndarray) -> pd.DataFrame:
    """Images, detected faces, misses and detection rate per (split, label), with "all" totals."""
    d = pd.DataFrame({"split": df["split"].astype(str).to_numpy(), "label": df["label"].astype(str).to_numpy(),
                      "detected": np.asarray(detected, bool)})
    parts = [d, d.assign(label="all"), d.assign(split="all", label="all")]
    out = pd.concat(parts).groupby(["split", "label"], sort=False)["detected"].agg(images="size", detected="sum")
    out["detected"] = out["detected"].astype(int)
    out["missed"] = out["images"] - out["detected"]
    out["rate"] = (out["detected"] / out["images"]).round(4)
    order = {"train": 0, "val": 1, "test": 2, "all": 4}
    return out.sort_index(key=lambda ix: ix.map(lambda v: (order.get(v, 3), v == "all", v)) if ix.name == "split"
                          else ix.map(lambda v: (v == "all", v)))


_WORKER: dict[str, Any] = {}


def make_extractor(extractor_kwargs: dict) -> LandmarkExtractor:
    """The LandmarkExtractor of `extractor_kwargs`; "keypoint_model" (a checkpoint path) becomes its realigner."""
    kwargs = dict(extractor_kwargs)
    kp = kwargs.pop("keypoint_model", None)
    return LandmarkExtractor(**kwargs, realigner=None if kp is None else load_realigner(kp))


def _init_worker(extractor_kwargs: dict, resize_to: int | None) -> None:
    _WORKER["extractor"] = make_extractor(extractor_kwargs)
    _WORKER["resize_to"] = resize_to


def _extract_one(item: tuple[str, str, bytes | np.ndarray]) -> tuple[str, np.ndarray | None, float, tuple, str]:
    """(key, landmarks or None, score, box, error) of the largest face in one image."""
    key, name, payload = item
    try:
        img = _decode(payload, _WORKER["resize_to"], name)
        faces = _WORKER["extractor"].process(img)
    except FerError as e:
        return key, None, float("nan"), (np.nan,) * 4, str(e)
    f = largest_face([f for f in faces if f.landmarks is not None])
    if f is None or f.landmarks is None:
        return key, None, float("nan"), (np.nan,) * 4, ""
    return key, f.landmarks.astype(np.float32), float(f.score), tuple(float(v) for v in f.box), ""


def extract_landmarks(df: pd.DataFrame, *, cache_dir: str | os.PathLike | None = None,
                      workers: int | None = None, resize_to: int | None = None,
                      extractor_kwargs: dict | None = None, progress: bool = True,
                      callback: ProgressCallback | None = None, shard_size: int = 2000,
                      runner: Callable[..., Iterator[tuple]] | None = None) -> Extraction:
    """Landmarks of every row of a dataset DataFrame (largest face per image), cached by content.

    `workers` processes (default: all cores, at most 2) each own one static-mode LandmarkExtractor;
    ``workers=1`` runs in this process. `resize_to`: the side every image is brought to first (a
    Dataset's ``resize_to``), None to read them as they are.
    `callback(done, total)` is called as images finish (cached ones count as done at once); an
    exception it raises cancels the run, and the images finished so far stay cached.
    `extractor_kwargs={"keypoint_model": PATH}` (ferlib.faces.realign): the images are extracted (or
    read from the cache) without it first, then only the misses go through the keypoint retry, in a
    cache of their own keyed by the regressor's sha256.
    `runner`: what extracts the uncached images instead of this module's process pool, with `_run`'s
    signature (e.g. ferlib.scale.RayExtractRunner: a Ray actor pool running `_extract_one`).
    """
    t0 = time.perf_counter()
    if "path" not in df.columns:
        raise InputError("extract_landmarks: the DataFrame has no 'path' column")
    kwargs = {**DEFAULT_EXTRACTOR, **(extractor_kwargs or {})}
    root = Path(cache_dir) if cache_dir else default_cache_dir()

    def extract(rows: pd.DataFrame, settings: dict, on_done: ProgressCallback | None) -> Extraction:
        return _extract_rows(rows, root, settings, resize_to=resize_to, workers=workers, progress=progress,
                             callback=on_done, shard_size=shard_size, runner=runner, t0=t0)

    if kwargs.get("keypoint_model") is None:
        return extract(df, kwargs, callback)
    # face mesh first (the plain extraction's cache), then the keypoint retry of its misses only
    base = extract(df, {k: v for k, v in kwargs.items() if k != "keypoint_model"}, callback)
    paths = df["path"].astype(str).to_numpy()
    miss = np.flatnonzero(~base.detected & ~np.isin(paths, list(base.errors)))
    if len(miss) == 0:
        return base
    retry = extract(df.iloc[miss], kwargs, None)
    for name in ("landmarks", "detected", "score", "box"):
        getattr(base, name)[miss] = getattr(retry, name)
    base.errors.update(retry.errors)
    base.summary = detection_summary(df, base.detected)
    base.n_cached += retry.n_cached
    base.n_extracted += retry.n_extracted
    base.seconds = time.perf_counter() - t0
    return base


def _extract_rows(df: pd.DataFrame, root: Path, kwargs: dict, *, resize_to: int | None, workers: int | None,
                  progress: bool, callback: ProgressCallback | None, shard_size: int,
                  runner: Callable[..., Iterator[tuple]] | None, t0: float) -> Extraction:
    """`extract_landmarks` of the rows of `df` with one set of LandmarkExtractor arguments (`kwargs`,
    the defaults merged in), in the cache folder of these settings under `root`."""
    store = ShardStore(_settings_dir(root, extractor_settings(kwargs, resize_to)))
    index, arrays = store.load()
    rows = df.to_dict("records")
    keys = [content_key(_payload(r)) for r in rows]
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in index and k not in todo:
            todo[k] = i
    n_cached = sum(k in index for k in keys)
    total = len(rows)
    new: dict[str, tuple] = {}
    errors: dict[str, str] = {}
    pending: list[tuple] = []

    def flush() -> None:
        if pending:
            store.write([p[0] for p in pending],
                        landmarks=np.stack([p[1] for p in pending]).astype(np.float32),
                        detected=np.array([p[2] for p in pending], bool),
                        score=np.array([p[3] for p in pending], np.float32),
                        box=np.array([p[4] for p in pending], np.float32))
            pending.clear()

    def items() -> Iterator[tuple[str, str, bytes | np.ndarray]]:
        for k, i in todo.items():
            yield k, str(rows[i]["path"]), _payload(rows[i])

    miss = np.full((NUM_LANDMARKS, 3), np.nan, np.float32)
    rows_per_key = pd.Series(keys).value_counts().to_dict() if todo else {}
    done = n_cached
    bar = tqdm(total=total, initial=done, disable=not progress, desc="landmarks", unit="img",
               smoothing=0.05, mininterval=1.0)
    if callback:
        callback(done, total)
    try:
        for key, pts, score, box, err in (runner or _run)(items(), len(todo), kwargs, resize_to, workers):
            if err:
                errors[str(rows[todo[key]]["path"])] = err
            else:
                entry = (key, miss if pts is None else pts, pts is not None, score, box)
                new[key] = entry
                pending.append(entry)
                if len(pending) >= shard_size:
                    flush()
            step = rows_per_key[key]
            done += step
            bar.update(step)
            if callback:
                callback(done, total)
    finally:
        flush()
        bar.close()

    n = len(rows)
    landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
    detected = np.zeros(n, bool)
    score = np.full(n, np.nan, np.float32)
    box = np.full((n, 4), np.nan, np.float32)
    for i, k in enumerate(keys):
        if k in new:
            _, landmarks[i], detected[i], score[i], box[i] = new[k]
        elif k in index:
            j = index[k]
            landmarks[i], detected[i] = arrays["landmarks"][j], arrays["detected"][j]
            score[i], box[i] = arrays["score"][j], arrays["box"][j]
    return Extraction(landmarks=landmarks, detected=detected, score=score, box=box,
                      summary=detection_summary(df, detected), errors=errors, n_cached=n_cached,
                      n_extracted=len(new),
                      seconds=time.perf_counter() - t0)


def _run(items: Iterable, n: int, kwargs: dict, resize_to: int | None, workers: int | None) -> Iterator[tuple]:
    """Extract every item, in this process (1 worker / few items) or a spawn pool."""
    if n == 0:
        return
    workers = workers or min(2, os.cpu_count() or 1)
    if workers <= 1 or n < 8:
        _init_worker(kwargs, resize_to)
        try:
            for it in items:
                yield _extract_one(it)
        finally:
            _WORKER.pop("extractor").close()
        return
    ctx = multiprocessing.get_context("spawn")  # MediaPipe graphs must not be forked
    with _spawn_without_main():
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(kwargs, resize_to))
    with pool:
        yield from pool.imap_unordered(_extract_one, items, chunksize=16)


@contextlib.contextmanager
def _spawn_without_main():
    """Start spawn workers without re-running the caller's main script.

    The workers need only ferlib, but spawn re-imports `__main__` from its path when it has no
    module spec: a plain script without an `if __name__ == "__main__"` guard would run again in
    every worker, and a Streamlit page (whose runner sets `__main__.__file__`) would be executed
    outside Streamlit. Hiding the path while the pool starts avoids both.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    if path is not None:
        del main.__file__
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


# ----------------------------------------------------------------------------- crops
@dataclass
class Crops:
    """Grey face crops row-aligned with a DataFrame: images (N, size, size) uint8; `cropped` is
    False where the whole image was used (small tight crops, or no face found); `frontal` is True where
    the crop was frontalised (framing "frontal": the faces a frontalising model hands its turned-face expert);
    `found` (the boxed framings; True everywhere for "landmarks") is False where `predict`'s face finding for
    image models finds no face: neither face mesh nor the detector (a miss, which counts as wrong)."""

    images: np.ndarray
    cropped: np.ndarray
    frontal: np.ndarray
    found: np.ndarray
    n_cached: int = 0


FRAMINGS = ("landmarks", "box", "frontal")
"""extract_crops' framings of a found face (ferlib.faces.crops.framed_crop): on its landmarks (models that
read landmarks too), on its detector box (image-only models: `InputSpec.box_framed`, as `predict` and Live
cut them), or frontalised when turned 20 degrees or more and on the detector box otherwise (a model whose
card names a turned-face expert)."""


def extract_crops(df: pd.DataFrame, size: int = 48, *, mode: str = "auto",
                  landmarks: Extraction | None = None, resize_to: int | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True,
                  framing: str = "landmarks", **extract_kw: Any) -> Crops:
    """Grey size x size face crops for image models, cached by content.

    mode "image": the whole image resized (FER2013-like tight crops); "face": the found face
    (landmarks from `landmarks`, else `extract_landmarks(df, **extract_kw)`) cut by
    ferlib.faces.crops.framed_crop as `framing` (FRAMINGS) says, the whole image where no face was found;
    "auto": "image" for images whose longer side is below ferlib.faces.landmarks.SMALL_SIDE, else "face".
    `resize_to`: as in `extract_landmarks`.
    """
    if mode not in ("auto", "image", "face"):
        raise InputError(f"crop mode {mode!r}: expected 'auto', 'image' or 'face'")
    if framing not in FRAMINGS:
        raise InputError(f"crop framing {framing!r}: expected one of {FRAMINGS}")
    if size < 1:
        raise InputError(f"crop size must be >= 1, got {size}")
    root = Path(cache_dir) if cache_dir else default_cache_dir("crops")
    lm_settings = extractor_settings(extract_kw.get("extractor_kwargs"), resize_to) if mode != "image" else None
    settings = {"format": CACHE_FORMAT, "size": size, "mode": mode, "resize_to": resize_to, "landmarks": lm_settings}
    if framing != "landmarks" and mode != "image":  # the landmark framing keeps the caches made before framings
        settings.update(framing=framing, faces="as predict finds them")
    store = ShardStore(_settings_dir(root, settings))
    index, arrays = store.load()
    rows = df.to_dict("records")
    payloads = [_payload(r) for r in rows]
    keys = [content_key(p) for p in payloads]
    n = len(rows)
    images = np.zeros((n, size, size), np.uint8)
    cropped = np.zeros(n, bool)
    frontal = np.zeros(n, bool)
    first_row: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in index:
            first_row.setdefault(k, i)
    use_face = {k: mode == "face" or (mode == "auto" and _longer_side(payloads[i], resize_to) >= SMALL_SIDE)
                for k, i in first_row.items()}
    face_rows = [i for k, i in first_row.items() if use_face[k]]
    all_rows = landmarks is not None  # given: row-aligned with df (small images' rows too)
    lm_row: dict[int, int] = {}
    if landmarks is not None:
        if len(landmarks.detected) != n:
            raise InputError(f"extract_crops: landmarks for {len(landmarks.detected)} rows, DataFrame has {n}")
        lm_row = {i: i for i in face_rows}
    elif face_rows:
        landmarks = extract_landmarks(df.iloc[face_rows], resize_to=resize_to, progress=progress, **extract_kw)
        lm_row = {i: j for j, i in enumerate(face_rows)}
    boxed = framing != "landmarks" and mode != "image"
    finder: LandmarkExtractor | None = None  # boxed: `predict`'s face finding for image models (no face mesh)
    new: dict[str, tuple[np.ndarray, bool, bool, bool]] = {}
    try:
        for k, i in tqdm(first_row.items(), desc="crops", unit="img", disable=not progress or not first_row):
            img = _decode(payloads[i], resize_to, str(rows[i]["path"]))
            j = lm_row[i] if use_face[k] else (i if all_rows else None)
            meshed = j is not None and landmarks is not None and bool(landmarks.detected[j])
            face = None
            if meshed and use_face[k]:
                assert landmarks is not None and j is not None
                face = Face(landmarks=landmarks.landmarks[j], box=tuple(landmarks.box[j]),
                            score=float(landmarks.score[j]))
            found = meshed
            # boxed: find the face as `predict` does for image models when face mesh missed it on every
            # detector box (the detector alone may find it), and when only the whole image was meshed (score
            # 0, the landmarks' box: `predict` crops on a detector box if the detector finds one)
            if boxed and (not meshed or (face is not None and face.score == 0.0)):
                finder = finder or make_extractor({**DEFAULT_EXTRACTOR, **(extract_kw.get("extractor_kwargs") or {}),
                                                   "mesh": False, "keep_unmeshed": True})
                faces = finder.process(img)
                found = found or bool(faces)
                best = largest_face(faces)
                if use_face[k] and best is not None and (face is None or best.score > 0.0):
                    face = best
            if face is not None:
                front = framing == "frontal" and turned(face)
                crop = framed_crop(img, face, size, frontal=framing == "frontal", on_box=framing == "box")
                new[k] = (crop, True, front, found)
            else:
                new[k] = (resize_square(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), size), False, False, found)
    finally:
        if finder is not None:
            finder.close()
    # only the boxed framings' shards hold "frontal" and "found"
    stored = len(arrays["images"]) if arrays else 0  # shard rows (a key written twice has two)
    stored_front = arrays.get("frontal", np.zeros(stored, bool))
    stored_found = arrays.get("found", np.ones(stored, bool))
    found_rows = np.ones(n, bool)
    for i, k in enumerate(keys):
        images[i], cropped[i], frontal[i], found_rows[i] = new[k] if k in new else (
            arrays["images"][index[k]], arrays["cropped"][index[k]], stored_front[index[k]], stored_found[index[k]])
    if not boxed:
        found_rows[:] = True
    if new:
        extra = ({"frontal": np.array([v[2] for v in new.values()], bool),
                  "found": np.array([v[3] for v in new.values()], bool)} if boxed else {})
        store.write(list(new), images=np.stack([v[0] for v in new.values()]),
                    cropped=np.array([v[1] for v in new.values()], bool), **extra)
    return Crops(images=images, cropped=cropped, frontal=frontal, found=found_rows,
                 n_cached=n - sum(k in new for k in keys))


def _longer_side(payload: bytes | np.ndarray, resize_to: int | None) -> int:
    """Longer side of an image as models will see it (header only for encoded images)."""
    if resize_to:
        return int(resize_to)
    if isinstance(payload, np.ndarray):
        return max(payload.shape[:2])
    try:
        return max(image_size(payload))
    except InputError:
        return 0  # unreadable: _decode raises the clear error
