"""The model registry: fine-tuned checkpoints, their versions and the one live model."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pandas as pd

from ferlib.errors import InputError, StorageError

from .db import Catalogue, row_id
from .names import slug, validate_name


class ModelsMixin(Catalogue):
    """The Store's model registry."""

    def model_dir(self, name: str) -> Path:
        """A fresh folder for a new checkpoint of model `name` (slug + uuid, never raw text)."""
        validate_name(name, "model name")
        d = self.root / "models" / f"{slug(name)}-{uuid.uuid4().hex[:8]}"
        try:
            d.mkdir(parents=True)
        except OSError as e:
            raise StorageError(f"cannot create {d}: {e.strerror or e}") from e
        return d

    def add_model(self, name: str, path: Path | str, card: dict) -> int:
        """Add a written checkpoint (`path` = its .safetensors) as the next version of `name`."""
        validate_name(name, "model name")
        p = Path(path)
        if not p.exists():
            raise InputError(f"model file {p} does not exist")
        rel = p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(p.resolve())
        with self._tx() as c:
            v = c.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE name = ?", (name,)).fetchone()[0]
            mid = c.execute("INSERT INTO models(name, version, path, created, card_json) VALUES (?,?,?,?,?)",
                            (name, int(v), rel, time.time(), json.dumps(card))).lastrowid
        return row_id(mid)

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
