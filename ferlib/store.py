"""The studio's storage: an embedded SQLite catalogue plus files under one data folder.

Layout of the data folder (default: ``$FERLIB_DATA``, else ``$FERLIB_HOME/data``; ferlib.locations)::

    catalogue.sqlite            sessions, samples, models, runs (WAL, foreign keys)
    sessions/<session id>/      <uuid>.png (face crop), <uuid>.npy (478x3 float32 landmarks)
    models/<slug>-<uuid>/       fine-tuned checkpoints (written by the trainer, see model_dir())
    exports/                    dataset zips

Guarantees: sample files are written atomically (temp file, fsync, os.replace) before their row
is inserted in one short transaction, so a crash loses at most the sample in flight; files left
without a row are removed by :meth:`Store.check`, which the app runs at start-up. Paths are built
from ids and uuids only, never from user text. An ``OSError`` while writing (full disk,
permissions) becomes :class:`StorageError` and leaves no half-written file. One SQLite connection
per thread with a busy timeout makes a Store safe for concurrent recorders. One app process per
data folder.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

from ferlib import locations
from ferlib.classes import FER7, UnknownClassError, canonical
from ferlib.errors import InputError, StorageError
from ferlib.fsutil import atomic_file, atomic_write_bytes
from ferlib.pose import PITCH_EDGES, YAW_EDGES, bin_label, bin_labels, pose_bin
from ferlib.types import face_landmarks

CONDITIONS: tuple[str, ...] = ("indoor", "outdoor")
RUN_STATUSES: tuple[str, ...] = ("running", "done", "failed", "cancelled", "interrupted")
NAME_PATTERN = re.compile(r"[A-Za-z0-9 _.\-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    condition TEXT NOT NULL,
    landmarks_only INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    emotion TEXT NOT NULL,
    condition TEXT NOT NULL,
    yaw REAL, pitch REAL, roll REAL,
    pose_bin TEXT,
    timestamp REAL NOT NULL,
    confidence REAL,
    crop_path TEXT,
    landmarks_path TEXT NOT NULL,
    frame_index INTEGER
);
CREATE INDEX IF NOT EXISTS samples_session ON samples(session_id);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    card_json TEXT NOT NULL,
    is_live INTEGER NOT NULL DEFAULT 0,
    UNIQUE(name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS models_one_live ON models(is_live) WHERE is_live = 1;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running','done','failed','cancelled','interrupted')),
    started REAL NOT NULL,
    ended REAL,
    config_json TEXT NOT NULL,
    metrics_json TEXT,
    pid INTEGER
);
"""


def default_root() -> Path:
    """The data folder: ``$FERLIB_DATA`` if set, else ``<FERLIB_HOME>/data`` (ferlib.locations.data_dir)."""
    return locations.data_dir()


def validate_name(name: object, what: str = "name") -> str:
    """Return `name` if it is a safe session/model name, else raise InputError saying why."""
    if not isinstance(name, str):
        raise InputError(f"{what} must be text, got {type(name).__name__}")
    if not name.strip():
        raise InputError(f"{what} {name!r} is empty")
    if len(name) > 64:
        raise InputError(f"{what} {name[:20]!r}... is {len(name)} characters long; at most 64 are allowed")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InputError(f"{what} {name!r} contains a path separator or control character")
    if not NAME_PATTERN.fullmatch(name) or name != name.strip() or set(name) <= {"."}:
        raise InputError(f"{what} {name!r} may only use letters, digits, space, '-', '_' and '.', "
                         "without leading/trailing spaces")
    return name


def slug(name: str) -> str:
    """Filesystem-safe lower-case slug of a validated name (never used alone as a unique path)."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "x"


@dataclass
class CheckReport:
    """What :meth:`Store.check` repaired."""

    orphan_files_removed: list[str] = field(default_factory=list)
    rows_without_files_removed: list[int] = field(default_factory=list)
    runs_interrupted: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphan_files_removed or self.rows_without_files_removed or self.runs_interrupted)


class Store:
    """SQLite catalogue + files of studio sessions, samples, fine-tuned models and training runs."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.db_path = self.root / "catalogue.sqlite"
        self._local = threading.local()
        self._inflight: set[Path] = set()
        self._inflight_lock = threading.Lock()
        try:
            (self.root / "sessions").mkdir(parents=True, exist_ok=True)
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the data folder {self.root}: {e}") from e

    # -- connection and transactions -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA foreign_keys=ON")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.conn = c
        return c

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction (BEGIN IMMEDIATE); sqlite errors become StorageError."""
        c = self._conn()
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            raise InputError(f"catalogue constraint failed: {e}") from e
        except sqlite3.Error as e:
            raise StorageError(f"catalogue write to {self.db_path} failed: {e}") from e

    def _query(self, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        """Close this thread's connection (other threads' close when those threads end)."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

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
        return _row_id(sid)

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
            return _row_id(sid)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        finally:
            with self._inflight_lock:
                self._inflight.difference_update((npy_path, png_path))

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def path_of(self, rel: str) -> Path:
        """Absolute path of a catalogue-relative file path."""
        return self.root / rel

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

    # -- models ------------------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        """A fresh folder for a new checkpoint of model `name` (slug + uuid, never raw text)."""
        validate_name(name, "model name")
        d = self.root / "models" / f"{slug(name)}-{uuid.uuid4().hex[:8]}"
        try:
            d.mkdir(parents=True)
        except OSError as e:
            raise StorageError(f"cannot create {d}: {e.strerror or e}") from e
        return d

    def register_model(self, name: str, path: Path | str, card: dict) -> int:
        """Register a written checkpoint (`path` = its .safetensors) as the next version of `name`."""
        validate_name(name, "model name")
        p = Path(path)
        if not p.exists():
            raise InputError(f"model file {p} does not exist")
        rel = p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(p.resolve())
        with self._tx() as c:
            v = c.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE name = ?", (name,)).fetchone()[0]
            mid = c.execute("INSERT INTO models(name, version, path, created, card_json) VALUES (?,?,?,?,?)",
                            (name, int(v), rel, time.time(), json.dumps(card))).lastrowid
        return _row_id(mid)

    def models(self) -> pd.DataFrame:
        rows = self._query("SELECT * FROM models ORDER BY id DESC")
        return pd.DataFrame([dict(r) for r in rows],
                            columns=["id", "name", "version", "path", "created", "card_json", "is_live"])

    def get_model(self, model_id: int) -> dict:
        rows = self._query("SELECT * FROM models WHERE id = ?", (int(model_id),))
        if not rows:
            raise InputError(f"no model with id {model_id}")
        d = dict(rows[0])
        d["card"] = json.loads(d.pop("card_json"))
        d["abs_path"] = str(self.path_of(d["path"])) if not Path(d["path"]).is_absolute() else d["path"]
        return d

    def set_live_model(self, model_id: int) -> None:
        """Make one model the live one (atomically: exactly one live afterwards)."""
        self.get_model(model_id)
        with self._tx() as c:
            c.execute("UPDATE models SET is_live = 0 WHERE is_live = 1")
            c.execute("UPDATE models SET is_live = 1 WHERE id = ?", (int(model_id),))

    def live_model(self) -> dict | None:
        rows = self._query("SELECT id FROM models WHERE is_live = 1")
        return self.get_model(rows[0]["id"]) if rows else None

    # -- training runs -----------------------------------------------------------------------
    def start_run(self, model_name: str, config: dict, pid: int | None = None) -> int:
        validate_name(model_name, "model name")
        with self._tx() as c:
            rid = c.execute("INSERT INTO runs(model_name, status, started, config_json, pid) VALUES (?,?,?,?,?)",
                            (model_name, "running", time.time(), json.dumps(config),
                             os.getpid() if pid is None else int(pid))).lastrowid
        return _row_id(rid)

    def update_run(self, run_id: int, metrics: dict) -> None:
        """Record the latest metrics (e.g. loss/accuracy history) of a running run."""
        with self._tx() as c:
            c.execute("UPDATE runs SET metrics_json = ? WHERE id = ?", (json.dumps(metrics), int(run_id)))

    def finish_run(self, run_id: int, status: str, metrics: dict | None = None) -> None:
        if status not in RUN_STATUSES or status == "running":
            raise InputError(f"run status {status!r} is not one of {RUN_STATUSES[1:]}")
        with self._tx() as c:
            c.execute("UPDATE runs SET status = ?, ended = ?, metrics_json = COALESCE(?, metrics_json) "
                      "WHERE id = ?", (status, time.time(), None if metrics is None else json.dumps(metrics),
                                       int(run_id)))

    def get_run(self, run_id: int) -> dict:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if not rows:
            raise InputError(f"no run with id {run_id}")
        d = dict(rows[0])
        d["config"] = json.loads(d.pop("config_json"))
        d["metrics"] = json.loads(d.pop("metrics_json") or "null")
        return d

    def runs(self) -> pd.DataFrame:
        rows = self._query("SELECT id, model_name, status, started, ended, pid FROM runs ORDER BY id DESC")
        return pd.DataFrame([dict(r) for r in rows],
                            columns=["id", "model_name", "status", "started", "ended", "pid"])

    # -- start-up repair ---------------------------------------------------------------------
    def check(self, active_run_ids: Sequence[int] = ()) -> CheckReport:
        """Repair the catalogue after a crash: remove temp files and sample files without a row,
        rows whose landmarks file is gone, and mark 'running' runs whose process is dead (or is
        this process but not in `active_run_ids`) as 'interrupted'."""
        rep = CheckReport()
        rows = self._query("SELECT id, crop_path, landmarks_path FROM samples")
        missing = [r["id"] for r in rows if not self.path_of(r["landmarks_path"]).exists()]
        if missing:
            with self._tx() as c:
                c.executemany("DELETE FROM samples WHERE id = ?", [(i,) for i in missing])
            rep.rows_without_files_removed = missing
        known = {p for r in rows if r["id"] not in missing for p in (r["landmarks_path"], r["crop_path"]) if p}
        with self._inflight_lock:
            inflight = set(self._inflight)
        for f in sorted((self.root / "sessions").rglob("*")):
            if f.is_file() and f not in inflight and self._rel(f) not in known:
                f.unlink(missing_ok=True)
                rep.orphan_files_removed.append(self._rel(f))
        for r in self._query("SELECT id, pid FROM runs WHERE status = 'running'"):
            pid = r["pid"]
            alive = pid is not None and _pid_alive(pid) and (pid != os.getpid() or r["id"] in active_run_ids)
            if not alive:
                rep.runs_interrupted.append(int(r["id"]))
        if rep.runs_interrupted:
            with self._tx() as c:
                c.executemany("UPDATE runs SET status = 'interrupted', ended = ? WHERE id = ? AND status = 'running'",
                              [(time.time(), i) for i in rep.runs_interrupted])
        return rep


_SAMPLE_COLS = ["id", "session_id", "emotion", "condition", "yaw", "pitch", "roll", "pose_bin", "timestamp",
                "confidence", "crop_path", "landmarks_path", "frame_index", "session"]


def _row_id(rowid: int | None) -> int:
    """The id of the row an INSERT just wrote (sqlite3 types ``lastrowid`` optional; after an INSERT it is set)."""
    if rowid is None:
        raise StorageError("the catalogue did not return the new row's id")
    return rowid


def _condition(condition: str) -> str:
    c = str(condition).strip().lower()
    if c not in CONDITIONS:
        raise InputError(f"condition {condition!r} is not one of {CONDITIONS}")
    return c


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    # A zombie counts as dead.
    try:
        return Path(f"/proc/{int(pid)}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
