"""Recording sessions and their samples (crop PNG + landmarks .npy + row), coverage and dataset export."""
from __future__ import annotations

import io
import shutil
import sqlite3
import time
import uuid
import zipfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from ferlib.classes import FER7, UnknownClassError, canonical
from ferlib.errors import InputError, StorageError
from ferlib.faces.pose import PITCH_EDGES, YAW_EDGES, bin_label, bin_labels, pose_bin
from ferlib.fsutil import atomic_file, atomic_write_bytes
from ferlib.types import face_landmarks

from .db import Catalogue, row_id
from .names import validate_name

CONDITIONS: tuple[str, ...] = ("indoor", "outdoor")

_SAMPLE_COLS = ["id", "session_id", "emotion", "condition", "yaw", "pitch", "roll", "pose_bin", "timestamp",
                "confidence", "crop_path", "landmarks_path", "frame_index", "session"]


class SessionsMixin(Catalogue):
    """The Store's sessions and samples."""

    # -- sessions ----------------------------------------------------------------------------
    def create_session(self, name: str, condition: str = "indoor", landmarks_only: bool = False) -> int:
        """Create a recording session; InputError for an unsafe or already used name."""
        validate_name(name, "session name")
        condition = _condition(condition)
        if self.session_by_name(name) is not None:
            raise InputError(f"session name {name!r} is already used")
        with self._tx() as c:
            sid = c.execute("INSERT INTO sessions(name, created, condition, landmarks_only) VALUES (?,?,?,?)",
                            (name, time.time(), condition, int(bool(landmarks_only)))).lastrowid
        return row_id(sid)

    def session_by_name(self, name: str) -> int | None:
        rows = self._query("SELECT id FROM sessions WHERE name = ?", (name,))
        return int(rows[0]["id"]) if rows else None

    def get_session(self, session_id: int) -> dict:
        rows = self._query("SELECT * FROM sessions WHERE id = ?", (int(session_id),))
        if not rows:
            raise InputError(f"no session with id {session_id}")
        return dict(rows[0])

    def sessions(self) -> pd.DataFrame:
        """All sessions with their sample counts, newest first."""
        rows = self._query("SELECT s.*, COUNT(x.id) AS samples FROM sessions s LEFT JOIN samples x "
                           "ON x.session_id = s.id GROUP BY s.id ORDER BY s.id DESC")
        return pd.DataFrame([dict(r) for r in rows],
                            columns=["id", "name", "created", "condition", "landmarks_only", "samples"])

    def session_dir(self, session_id: int) -> Path:
        return self.root / "sessions" / str(int(session_id))

    def delete_session(self, session_id: int) -> None:
        """Delete a session, its rows and its files."""
        self.get_session(session_id)
        with self._tx() as c:
            c.execute("DELETE FROM sessions WHERE id = ?", (int(session_id),))
        try:
            shutil.rmtree(self.session_dir(session_id), ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"session {session_id} was removed from the catalogue but its folder "
                               f"could not be deleted: {e}") from e

    # -- samples -----------------------------------------------------------------------------
    def add_sample(self, session_id: int, emotion: str, landmarks: np.ndarray, *,
                   crop: np.ndarray | None = None, pose: Sequence[float] | None = None,
                   confidence: float | None = None, condition: str | None = None,
                   timestamp: float | None = None, frame_index: int | None = None) -> int:
        """Store one sample: crop PNG (skipped in landmarks-only sessions) + landmarks .npy + row.

        landmarks: (478, 3) finite floats (pixel coordinates, as in Face.landmarks).
        crop: BGR (H, W, 3) or grey (H, W) uint8. pose: (yaw, pitch, roll) degrees.
        condition defaults to the session's. Returns the sample id.
        """
        sess = self.get_session(session_id)
        try:
            emotion = canonical(emotion)
        except UnknownClassError as e:
            raise InputError(str(e)) from None
        condition = _condition(condition or sess["condition"])
        pts = face_landmarks(landmarks, "sample landmarks")
        yaw, pitch, roll = (float(v) for v in pose) if pose is not None else (None, None, None)
        png = None
        if crop is not None and not sess["landmarks_only"]:
            img = np.asarray(crop)
            if (img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0
                    or (img.ndim == 3 and img.shape[2] != 3)):
                raise InputError(f"sample crop must be a non-empty uint8 BGR or grey image, got "
                                 f"{img.dtype} {img.shape}")
            ok, buf = cv2.imencode(".png", img)
            if not ok:
                raise InputError(f"sample crop of shape {img.shape} could not be encoded as PNG")
            png = buf.tobytes()
        folder = self.session_dir(session_id)
        stem = uuid.uuid4().hex
        npy_path, png_path = folder / f"{stem}.npy", folder / f"{stem}.png"
        written: list[Path] = []
        with self._inflight_lock:
            self._inflight.update((npy_path, png_path))
        try:
            b = io.BytesIO()
            np.save(b, pts)
            atomic_write_bytes(npy_path, b.getvalue())
            written.append(npy_path)
            if png is not None:
                atomic_write_bytes(png_path, png)
                written.append(png_path)
            with self._tx() as c:
                sid = c.execute(
                    "INSERT INTO samples(session_id, emotion, condition, yaw, pitch, roll, pose_bin, timestamp,"
                    " confidence, crop_path, landmarks_path, frame_index) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (int(session_id), emotion, condition, yaw, pitch, roll, pose_bin(yaw, pitch),
                     float(timestamp if timestamp is not None else time.time()),
                     None if confidence is None else float(confidence),
                     self._rel(png_path) if png is not None else None, self._rel(npy_path),
                     None if frame_index is None else int(frame_index))).lastrowid
            return row_id(sid)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        finally:
            with self._inflight_lock:
                self._inflight.difference_update((npy_path, png_path))

    def samples(self, session_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """Sample rows (all, or of the given sessions) with the session name, in id order.

        crop_path is missing (NA) for landmarks-only samples; paths are relative to the data folder
        (see path_of)."""
        sql = "SELECT x.*, s.name AS session FROM samples x JOIN sessions s ON s.id = x.session_id"
        args: list = []
        if session_ids is not None:
            ids = [int(i) for i in session_ids]
            if not ids:
                return pd.DataFrame(columns=_SAMPLE_COLS)
            sql += f" WHERE x.session_id IN ({','.join('?' * len(ids))})"
            args = ids
        rows = self._query(sql + " ORDER BY x.id", args)
        return pd.DataFrame([dict(r) for r in rows], columns=_SAMPLE_COLS)

    def count_samples(self, session_id: int | None = None) -> int:
        if session_id is None:
            return int(self._query("SELECT COUNT(*) FROM samples")[0][0])
        return int(self._query("SELECT COUNT(*) FROM samples WHERE session_id = ?", (int(session_id),))[0][0])

    def _sample_row(self, sample_id: int) -> sqlite3.Row:
        rows = self._query("SELECT * FROM samples WHERE id = ?", (int(sample_id),))
        if not rows:
            raise InputError(f"no sample with id {sample_id}")
        return rows[0]

    def load_landmarks(self, sample_id: int) -> np.ndarray:
        """The (478, 3) float32 landmarks of a sample."""
        return np.load(self.path_of(self._sample_row(sample_id)["landmarks_path"]), allow_pickle=False)

    def load_crop(self, sample_id: int) -> np.ndarray | None:
        """The BGR crop of a sample, or None for a landmarks-only sample."""
        rel = self._sample_row(sample_id)["crop_path"]
        return None if rel is None else cv2.imread(str(self.path_of(rel)), cv2.IMREAD_COLOR)

    def landmark_arrays(self, session_ids: Sequence[int] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """All landmarks of the selected samples as (N, 478, 3) float32, with their rows."""
        df = self.samples(session_ids)
        pts = np.stack([np.load(self.path_of(p), allow_pickle=False) for p in df["landmarks_path"]]) \
            if len(df) else np.zeros((0, 478, 3), np.float32)
        return pts.astype(np.float32), df

    def delete_sample(self, sample_id: int) -> None:
        """Delete a sample's row, then its files."""
        row = self._sample_row(sample_id)
        with self._tx() as c:
            c.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),))
        for rel in (row["crop_path"], row["landmarks_path"]):
            if rel:
                self.path_of(rel).unlink(missing_ok=True)

    # -- coverage and export -----------------------------------------------------------------
    def coverage(self, session_ids: Sequence[int] | None = None,
                 classes: Sequence[str] = FER7) -> pd.DataFrame:
        """Counts per emotion x condition x yaw bin x pitch bin, with a row (count 0) for every
        combination of `classes` (plus any other recorded emotion), conditions and bins."""
        df = self.samples(session_ids)
        emotions = list(classes) + sorted(set(df["emotion"]) - set(classes))
        yb, pb = bin_labels(YAW_EDGES), bin_labels(PITCH_EDGES)
        idx = pd.MultiIndex.from_product([emotions, list(CONDITIONS), yb + ["unknown"], pb + ["unknown"]],
                                         names=["emotion", "condition", "yaw_bin", "pitch_bin"])
        if len(df):
            df = df.assign(yaw_bin=[bin_label(v, YAW_EDGES) for v in df["yaw"]],
                           pitch_bin=[bin_label(v, PITCH_EDGES) for v in df["pitch"]])
            counts = df.groupby(["emotion", "condition", "yaw_bin", "pitch_bin"]).size()
        else:
            counts = pd.Series(dtype=int)
        out = counts.reindex(idx, fill_value=0).rename("count").reset_index()
        known = (out["yaw_bin"] != "unknown") & (out["pitch_bin"] != "unknown")
        return out[known | (out["count"] > 0)].reset_index(drop=True)

    def export_zip(self, session_ids: Sequence[int], path: Path | str) -> Path:
        """Write a dataset zip of the sessions: ``<emotion>/<session id>_<sample id>.png|.npy``
        plus ``samples.csv``; atomically (temp + os.replace). Returns the path."""
        ids = [int(i) for i in session_ids]
        for i in ids:
            self.get_session(i)
        df = self.samples(ids)
        path = Path(path)
        with atomic_file(path, "the export ") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            rows = []
            for r in df.itertuples(index=False):
                stem = f"{r.emotion}/{r.session_id}_{r.id}"
                z.write(self.path_of(r.landmarks_path), f"{stem}.npy")
                crop = None
                if isinstance(r.crop_path, str):
                    z.write(self.path_of(r.crop_path), f"{stem}.png")
                    crop = f"{stem}.png"
                rows.append({**r._asdict(), "crop_path": crop, "landmarks_path": f"{stem}.npy"})
            z.writestr("samples.csv", pd.DataFrame(rows, columns=_SAMPLE_COLS).to_csv(index=False))
        return path


def _condition(condition: str) -> str:
    c = str(condition).strip().lower()
    if c not in CONDITIONS:
        raise InputError(f"condition {condition!r} is not one of {CONDITIONS}")
    return c
