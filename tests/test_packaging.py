"""The installed library: the `ferlib` console script, the model zoo, shipped models found by name from
any folder, and every location from ferlib.locations (FERLIB_HOME and the per-folder overrides)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import ferlib
from ferlib import locations
from ferlib.errors import ModelFileError
from ferlib.inference import zoo
from ferlib.inference.checkpoint import resolve_checkpoint
from tests.helpers import FIXTURE_CLIP, ROOT

FERLIB = Path(sys.executable).parent / "ferlib"
SHIPPED = sorted(p.stem for p in (ROOT / "models").glob("*.json"))
BARE = "resnet18_attention_fer2013_long"


def run_ferlib(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(FERLIB), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_console_script_is_installed_and_runs(tmp_path):
    assert FERLIB.is_file() and os.access(FERLIB, os.X_OK), \
        f"{FERLIB} is missing: ./setup.sh installs ferlib itself (pip install --no-deps -e .)"
    r = run_ferlib("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for command in ("predict", "extract", "train", "finetune", "evaluate", "export", "bench", "models"):
        assert command in r.stdout
    v = run_ferlib("--version", cwd=tmp_path)
    assert v.returncode == 0 and v.stdout.strip() == f"ferlib {ferlib.__version__}"


def test_pyproject_declares_the_project():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "ferlib" and project["scripts"] == {"ferlib": "ferlib.cli:main"}
    assert "version" in project["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ferlib._version.__version__"}
    assert {"app", "dev"} <= set(project["optional-dependencies"])
    assert any(d.startswith("mediapipe==") for d in project["dependencies"])
    assert not any(re.match(r"(jax|opencv-python|opencv-contrib-python)\b(?!-headless)", d)
                   for d in project["dependencies"]), "mediapipe's jax and GUI OpenCV stay out"
    # one version definition: ferlib/__init__.py takes it from ferlib/_version.py
    assert '__version__ = "' not in (ROOT / "ferlib" / "__init__.py").read_text()


def test_models_lists_every_shipped_card(tmp_path):
    assert len(SHIPPED) >= 2
    r = run_ferlib("models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "task"]
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == SHIPPED
    j = run_ferlib("models", "--json", cwd=tmp_path)
    assert j.returncode == 0, j.stderr
    data = json.loads(j.stdout)
    assert [m["name"] for m in data["models"]] == SHIPPED and data["default"] in SHIPPED
    assert Path(data["models_dir"]) == ROOT / "models"
    for m in data["models"]:
        assert m["task"] in ("classification", "keypoints") and m["inputs"]
        if m["task"] == "classification":
            assert 0.3 < m["accuracy"] < 1 and 0 < m["macro_f1"] < 1, m["name"]
        assert m["ms_per_face_torch"] is None or m["ms_per_face_torch"] > 0


def test_zoo_prefers_the_cards_own_time_and_says_dash_without_one(tmp_path, monkeypatch):
    for suffix in (".json", ".safetensors"):
        shutil.copy(ROOT / "models" / f"distance_mlp_fer2013{suffix}", tmp_path / f"timed{suffix}")
        shutil.copy(ROOT / "models" / f"distance_mlp_fer2013{suffix}", tmp_path / f"untimed{suffix}")
    (tmp_path / "orphan.json").write_text("{}")  # a card without weights is not a model
    card = json.loads((tmp_path / "timed.json").read_text())
    card["metrics"]["time_per_face_ms"] = {"torch": 0.5, "onnx": 0.25}
    (tmp_path / "timed.json").write_text(json.dumps(card))
    monkeypatch.setattr(locations, "benchmarks_dir", lambda: None)
    rows = {r["name"]: r for r in zoo.shipped(tmp_path)}
    assert sorted(rows) == ["timed", "untimed"]
    assert (rows["timed"]["ms_per_face_torch"], rows["timed"]["time_source"]) == (0.5, "card")
    assert rows["untimed"]["ms_per_face_torch"] is None
    text = zoo.table(list(rows.values()))
    assert re.search(r"^untimed .* -\s+-$", text, re.M), text


@pytest.fixture(scope="module")
def face_jpg(tmp_path_factory) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(FIXTURE_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)  # laughing, one clear face
    ok, frame = cap.read()
    cap.release()
    assert ok
    path = tmp_path_factory.mktemp("img") / "face.jpg"
    cv2.imwrite(str(path), frame)
    return path


def test_predict_a_bare_shipped_name_from_another_folder(tmp_path, face_jpg):
    shutil.copy(face_jpg, tmp_path / "face.jpg")
    home = tmp_path / "home"
    r = run_ferlib("predict", "face.jpg", "--model", BARE, "--out", "x.csv", cwd=tmp_path,
                   env={"FERLIB_HOME": str(home)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"model: {BARE} ({ROOT / 'models' / BARE}.json" in r.stderr
    rows = (tmp_path / "x.csv").read_text().splitlines()
    assert rows[0].startswith("source,frame,face,detected,label") and len(rows) == 2
    assert rows[1].split(",")[3] == "1", "the face is found"
    bad = run_ferlib("predict", "face.jpg", "--model", "no_such_model", "--out", "y.csv", cwd=tmp_path)
    assert bad.returncode == 2 and "no shipped model has that name" in bad.stderr and BARE in bad.stderr
    assert not (tmp_path / "y.csv").exists()


def test_locations_follow_ferlib_home(tmp_path, monkeypatch):
    from ferlib.data import default_cache_dir
    from ferlib.store import default_root

    for name in ("FERLIB_DATA", "FERLIB_CACHE", "FERLIB_RUNS", "FERLIB_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path / "home"))
    home = tmp_path / "home"
    assert locations.home() == home
    assert default_root() == locations.data_dir() == home / "data"
    assert default_cache_dir() == home / "cache" / "landmarks"
    assert default_cache_dir("crops") == home / "cache" / "crops"
    assert locations.runs_dir() == home / "runs"
    assert locations.models_dir() == ROOT / "models", "the shipped models do not move with FERLIB_HOME"
    # the per-folder variables still override
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("FERLIB_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("FERLIB_RUNS", str(tmp_path / "r"))
    assert (default_root(), default_cache_dir(), locations.runs_dir()) == (
        tmp_path / "d", tmp_path / "c" / "landmarks", tmp_path / "r")
    assert json.loads(json.dumps(locations.describe()))["home"] == str(home)


def test_defaults_of_a_source_checkout_and_of_an_installed_copy(monkeypatch):
    for name in ("FERLIB_HOME", "FERLIB_DATA", "FERLIB_CACHE", "FERLIB_RUNS", "FERLIB_MODELS"):
        monkeypatch.delenv(name, raising=False)
    assert locations.source_root() == ROOT
    assert (locations.home(), locations.data_dir(), locations.models_dir()) == (ROOT, ROOT / "data", ROOT / "models")
    monkeypatch.setattr(locations, "source_root", lambda: None)  # as installed from a wheel
    assert locations.home() == Path.home() / ".ferlib"
    assert locations.cache_dir("landmarks") == Path.home() / ".ferlib" / "cache" / "landmarks"
    assert locations.models_dir() == Path(sys.prefix) / "share" / "ferlib" / "models"
    assert locations.benchmarks_dir() is None


def test_ferlib_models_moves_the_shipped_models(tmp_path, monkeypatch):
    for suffix in (".json", ".safetensors"):
        shutil.copy(ROOT / "models" / f"distance_mlp_fer2013{suffix}", tmp_path / f"mine{suffix}")
    monkeypatch.setenv("FERLIB_MODELS", str(tmp_path))
    assert resolve_checkpoint("mine") == tmp_path / "mine.json"  # read at call time, not at import
    with pytest.raises(ModelFileError, match=r"shipped: mine\)"):
        resolve_checkpoint(BARE)


def test_no_library_path_comes_from_the_source_layout():
    """Only ferlib/locations.py may look at the folders around the package."""
    offenders = []
    for path in sorted((ROOT / "ferlib").rglob("*.py")):
        text = path.read_text()
        if path.name != "locations.py" and re.search(r"__file__\)?\.resolve\(\)\.parents\[|\.parent\.parent", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"derive paths through ferlib.locations: {offenders}"


@pytest.mark.slow
def test_the_wheel_carries_the_models_and_assets(tmp_path):
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info/ next to pyproject.toml
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ferlib", src / "ferlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "models", src / "models")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                        "--wheel-dir", str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("ferlib-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"ferlib-{ferlib.__version__}.data/data/share/ferlib/models/"
    for stem in SHIPPED:
        assert {data + stem + ".json", data + stem + ".safetensors"} <= names, stem
    assert {"ferlib/assets/canonical_face.npy", "ferlib/locations.py", "ferlib/_version.py"} <= names
    assert not any(n.startswith(("tests/", "webapp/", "scripts/")) for n in names)
