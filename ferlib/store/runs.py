"""Training runs: started, their latest metrics, and how they ended."""
from __future__ import annotations

import json
import os
import time

import pandas as pd

from ferlib.errors import InputError

from .db import Catalogue, row_id
from .names import validate_name

RUN_STATUSES: tuple[str, ...] = ("running", "done", "failed", "cancelled", "interrupted")


class RunsMixin(Catalogue):
    """The Store's training runs."""

    def start_run(self, model_name: str, config: dict, pid: int | None = None) -> int:
        validate_name(model_name, "model name")
        with self._tx() as c:
            rid = c.execute("INSERT INTO runs(model_name, status, started, config_json, pid) VALUES (?,?,?,?,?)",
                            (model_name, "running", time.time(), json.dumps(config),
                             os.getpid() if pid is None else int(pid))).lastrowid
        return row_id(rid)

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
