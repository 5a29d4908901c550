"""Files, under everything: sha256 hashing, atomic writes, and the JSON encoding of numpy values.

Imports nothing from ferlib but `ferlib.errors`, so every module (the catalogue, checkpoints, the
caches, the CLI) can use it without import circles.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ferlib.errors import StorageError

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """sha256 hex of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    """sha256 hex of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: Iterable, root: Path | None = None) -> str:
    """sha256 hex over a set of files: for each path, sorted, the line ``"<name>\\0<sha256 of its
    bytes>\\n"``, where name is the path relative to `root` (when it lies under the folder `root`),
    else the path as given, in POSIX form."""
    root = Path(root) if root is not None else None
    h = hashlib.sha256()
    for f in sorted({str(p) for p in paths}):
        rel = Path(f).relative_to(root) if root is not None and root.is_dir() and Path(f).is_relative_to(root) \
            else Path(f)
        h.update(f"{rel.as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def json_default(o):
    """`json.dumps(..., default=json_default)`: numpy scalars, arrays and torch tensors as Python
    numbers and lists (anything with `tolist`, else `item`); anything else raises TypeError."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


TEMP_PATTERN = ".*.tmp"
"""The glob of the temp files atomic writes make beside their target (`.NAME.<8 hex>.tmp`): one
left behind was being written when its process was killed (`Store.check` removes them)."""


@contextmanager
def atomic_file(path: Path, what: str = "") -> Iterator:
    """A binary file that replaces `path` atomically when the block ends (temp file in the same
    folder, fsync, os.replace). An OSError (full disk, permissions) raises StorageError naming
    `what` and the path; no temp or partial file remains."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not write {what}{path}: {e.strerror or e}") from e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


__all__ = ["atomic_file", "atomic_write_bytes", "emit_report", "json_default", "sha256_bytes", "sha256_file",
           "sha256_files"]


def emit_report(text: str, out=None) -> None:
    """Print a report and, when `out` is given, write it there atomically (the scripts' last step)."""
    if out:
        atomic_write_bytes(Path(out), text.encode("utf-8"))
    print(text)
