"""The data folder and its SQLite catalogue: schema, one connection per thread, short transactions."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ferlib import locations
from ferlib.errors import InputError, StorageError

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


class Catalogue:
    """The data folder and its catalogue: connection, transactions, paths. The Store's base."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.db_path = self.root / "catalogue.sqlite"
        self._local = threading.local()
        # Sample files being written whose row is not in yet; check() leaves them alone.
        self._inflight: set[Path] = set()
        self._inflight_lock = threading.Lock()
        try:
            (self.root / "sessions").mkdir(parents=True, exist_ok=True)
            (self.root / "models").mkdir(parents=True, exist_ok=True)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"cannot open the data folder {self.root}: {e}") from e

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

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def path_of(self, rel: str) -> Path:
        """Absolute path of a catalogue-relative file path."""
        return self.root / rel

    def run_dir(self, run_id: int) -> Path:
        """The folder of run `run_id`'s files (config, curves, metrics; the training makes it)."""
        return self.root / "runs" / str(int(run_id))


def row_id(rowid: int | None) -> int:
    """The id of the row an INSERT just wrote (sqlite3 types ``lastrowid`` optional; after an INSERT it is set)."""
    if rowid is None:
        raise StorageError("the catalogue did not return the new row's id")
    return rowid
