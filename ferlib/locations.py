"""Where ferlib reads and writes files. Every default location of the library comes from here.

``FERLIB_HOME`` is the root of a user's files; each folder under it can be moved on its own:

==========  =========================  ===========================================================
folder      override                   default
==========  =========================  ===========================================================
home        ``$FERLIB_HOME``           the source checkout when ferlib runs from one (``./setup.sh``
                                       installs it editable: data stays where it always was), else
                                       ``~/.ferlib``
data        ``$FERLIB_DATA``           ``<home>/data``: the studio's catalogue, samples, models
cache       ``$FERLIB_CACHE``          ``<home>/cache``: landmark and crop caches
runs        ``$FERLIB_RUNS``           ``<home>/runs``: run folders of ``ferlib train/finetune``
models      ``$FERLIB_MODELS``         the shipped models: ``models/`` of the source checkout, else
                                       ``<sys.prefix>/share/ferlib/models`` (a wheel install puts
                                       them there)
==========  =========================  ===========================================================

Every function reads the environment when called, so a variable set after import still counts.
A source checkout is recognised by the ``pyproject.toml`` that names the project ``ferlib`` next
to the package; this is the only place that looks at the source tree's layout.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"  # package data: the canonical face and the mirror permutation
"""The folder of the ferlib package itself (its assets/ live inside it)."""


@lru_cache(maxsize=1)
def source_root() -> Path | None:
    """The source checkout ferlib is imported from (editable install or a run from the checkout),
    or None when it is an installed copy."""
    root = PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "ferlib"' in text else None


def _env_dir(name: str) -> Path | None:
    v = os.environ.get(name, "").strip()
    return Path(v).expanduser() if v else None


def home() -> Path:
    """``$FERLIB_HOME``, else the source checkout, else ``~/.ferlib``."""
    return _env_dir("FERLIB_HOME") or source_root() or Path.home() / ".ferlib"


def data_dir() -> Path:
    """The studio's data folder: ``$FERLIB_DATA``, else ``<home>/data``."""
    return _env_dir("FERLIB_DATA") or home() / "data"


def cache_dir(kind: str | None = None) -> Path:
    """The cache folder (``$FERLIB_CACHE``, else ``<home>/cache``), or its `kind` subfolder."""
    root = _env_dir("FERLIB_CACHE") or home() / "cache"
    return root / kind if kind else root


def runs_dir() -> Path:
    """Where training writes run folders: ``$FERLIB_RUNS``, else ``<home>/runs``."""
    return _env_dir("FERLIB_RUNS") or home() / "runs"


def _installed_models_dir() -> Path:
    return Path(sys.prefix) / "share" / "ferlib" / "models"


def models_dir() -> Path:
    """The shipped models: ``$FERLIB_MODELS``, else the checkout's ``models/``, else the copy a wheel
    install put in ``<sys.prefix>/share/ferlib/models``."""
    env = _env_dir("FERLIB_MODELS")
    if env:
        return env
    src = source_root()
    if src is not None and (src / "models").is_dir():
        return src / "models"
    return _installed_models_dir()


def benchmarks_dir() -> Path | None:
    """``benchmarks/`` of the source checkout (measured times per face for ``ferlib models``), or None
    for an installed copy."""
    src = source_root()
    return src / "benchmarks" if src is not None and (src / "benchmarks").is_dir() else None


def shared_data_dir() -> Path:
    """The datasets benchmarks and data tests read (fer2013.zip, ...): ``$FERLIB_SHARED/data``, else
    ``shared/data`` beside the source checkout (beside the current folder for an installed copy)."""
    shared = _env_dir("FERLIB_SHARED") or (source_root() or Path.cwd()).parent / "shared"
    return shared / "data"


def fixture_clip() -> Path:
    """The committed test clip `ferlib bench` measures on: ``tests/fixtures`` of the source checkout
    (of the current folder for an installed copy, which does not ship it)."""
    return (source_root() or Path.cwd()) / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def describe() -> dict[str, str]:
    """Every location as text (``ferlib models --json`` and bug reports show it)."""
    src = source_root()
    return {"home": str(home()), "data": str(data_dir()), "cache": str(cache_dir()), "runs": str(runs_dir()),
            "models": str(models_dir()), "source": str(src) if src else ""}
