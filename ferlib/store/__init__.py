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

One file per job: ``db`` (data folder, schema, connection, transactions), ``names`` (safe names),
``sessions`` (sessions, samples, coverage, export), ``models`` (model registry), ``runs`` (training
runs), ``check`` (start-up repair). :class:`Store` puts them together.
"""
from __future__ import annotations

from ferlib.faces.pose import pose_bin

from .check import CheckMixin, CheckReport
from .db import default_root
from .models import ModelsMixin
from .names import NAME_PATTERN, slug, validate_name
from .runs import RUN_STATUSES, RunsMixin
from .sessions import CONDITIONS, SessionsMixin

__all__ = ["CONDITIONS", "NAME_PATTERN", "RUN_STATUSES", "CheckReport", "Store", "default_root", "pose_bin", "slug",
           "validate_name"]


class Store(SessionsMixin, ModelsMixin, RunsMixin, CheckMixin):
    """SQLite catalogue + files of studio sessions, samples, fine-tuned models and training runs."""
