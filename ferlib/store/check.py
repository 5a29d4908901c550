"""The start-up repair after a crash: orphan files, rows without files, runs whose process died."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ferlib.fsutil import TEMP_PATTERN

from .db import Catalogue


@dataclass
class CheckReport:
    """What :meth:`Store.check` repaired."""

    orphan_files_removed: list[str] = field(default_factory=list)
    rows_without_files_removed: list[int] = field(default_factory=list)
    runs_interrupted: list[int] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphan_files_removed or self.rows_without_files_removed or self.runs_interrupted
                    or self.temp_files_removed)


class CheckMixin(Catalogue):
    """The Store's integrity check."""

    def check(self, active_run_ids: Sequence[int] = ()) -> CheckReport:
        """Repair the catalogue after a crash: remove sample files without a row, rows whose
        landmarks file is gone, and the temp files of atomic writes a killed process left anywhere
        in the data folder (a run's resume.pt, curves, models; not in the folders of
        `active_run_ids`); mark 'running' runs whose process is dead (or is this process but not in
        `active_run_ids`) as 'interrupted'."""
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
        sessions = self.root / "sessions"  # its files, temp ones too, were checked above
        active = [self.run_dir(i) for i in active_run_ids]
        for f in sorted(self.root.rglob(TEMP_PATTERN)):
            if f.is_file() and sessions not in f.parents and not any(a in f.parents for a in active):
                f.unlink(missing_ok=True)
                rep.temp_files_removed.append(self._rel(f))
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
