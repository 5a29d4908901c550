"""The Ray engine (ferlib.scale): the local engine's rows, resumable shards, clear errors.

One local Ray cluster (num_cpus=2, 127.0.0.1 only, no dashboard, no usage statistics) serves the
module and is shut down at its end; the kill test's subprocess starts (and loses) its own.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferlib import scale
from ferlib.cli import main
from ferlib.data.cache import extract_landmarks
from ferlib.errors import InputError, ModelFileError
from ferlib.inference.pipeline import shipped_keypoint_model
from tests.helpers import FIXTURE_CLIP, ROOT

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e .[scale]; requirements.txt pins it)")

MAX_FRAMES = 8


@pytest.fixture(scope="module")
def cluster():
    r, started = scale.start_ray(None, 2)
    assert started and r.cluster_resources().get("CPU") == 2
    assert {n["NodeManagerAddress"] for n in r.nodes()} == {"127.0.0.1"}  # listens on the loopback only
    yield r
    r.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """Five 480x270 frames of the committed clip as JPEGs, an unreadable 'image', and the clip."""
    import cv2

    from ferlib.io import iter_video

    root = tmp_path_factory.mktemp("scale_inputs")
    for idx, _, bgr in iter_video(FIXTURE_CLIP, max_frames=261):
        if idx % 65 == 0:
            cv2.imwrite(str(root / f"f{idx:04d}.jpg"), cv2.resize(bgr, (480, 270), interpolation=cv2.INTER_AREA))
    (root / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return [str(root), str(FIXTURE_CLIP)]


@pytest.fixture(scope="module")
def local_csv(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale_local") / "local.csv"
    assert main(["predict", *inputs, "--max-frames", str(MAX_FRAMES), "--out", str(out)]) == 2  # the broken file
    return out


def _assert_same(ray_csv: Path, local_csv: Path) -> None:
    a, b = pd.read_csv(ray_csv, keep_default_na=False), pd.read_csv(local_csv, keep_default_na=False)
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) > MAX_FRAMES
    key = ["source", "frame", "face", "detected", "label", "path"]
    pd.testing.assert_frame_equal(a[key], b[key])
    probs = [c for c in a.columns if c.startswith("p_")]
    num = lambda df: df[probs].replace("", np.nan).astype(float).to_numpy()  # noqa: E731
    np.testing.assert_allclose(num(a), num(b), atol=1e-4, rtol=0, equal_nan=True)


def test_ray_predict_matches_local_and_resumes(cluster, inputs, local_csv, tmp_path):
    out, shards = tmp_path / "ray.csv", tmp_path / "shards"
    args = ["predict", *inputs, "--max-frames", str(MAX_FRAMES), "--out", str(out), "--engine", "ray",
            "--workers", "2", "--image-batch", "2", "--shard-dir", str(shards), "--keep-shards"]
    assert main(args) == 2  # the broken file is reported, as by the local engine
    _assert_same(out, local_csv)
    assert out.read_bytes() == local_csv.read_bytes()  # the very same CSV
    files = sorted(shards.glob("*.json"))
    assert len(files) == 4  # 2 + 2 + 2 images (one unreadable), the video
    # a crash lost one shard: only that task runs again
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    time.sleep(0.01)
    out.unlink()
    settings = scale.PredictSettings(keypoint_model=str(shipped_keypoint_model()), max_frames=MAX_FRAMES)
    run = scale.predict_ray(inputs, settings, shards, workers=1, image_batch=2, progress=False)
    assert (run.tasks, run.skipped) == (4, 3) and run.workers == 1
    assert all(f.stat().st_mtime_ns == m for f, m in mtimes.items() if f != files[1])
    assert files[1].exists()
    scale.write_csv(run.report.frame, out)
    assert out.read_bytes() == local_csv.read_bytes()
    # without --keep-shards the shards go once the CSV is written
    assert main(args[:-1]) == 2
    assert not shards.exists()
    assert out.read_bytes() == local_csv.read_bytes()


def test_shard_keys_follow_settings_and_files(inputs, tmp_path):
    """A shard is reused only for the same model, settings and files (path, size, mtime)."""
    base = scale.PredictSettings(keypoint_model=None)
    fp = base.fingerprint()
    assert scale.PredictSettings(keypoint_model=None).fingerprint() == fp
    assert scale.PredictSettings(keypoint_model=None, threads=2).fingerprint() == fp  # changes no row
    for other in (dict(smoothing="none"), dict(backend="torch"), dict(max_frames=3),
                  dict(keypoint_model=str(shipped_keypoint_model())), dict(model="landmark_cnn1d_fer2013"),
                  dict(frontalize=False)):
        assert scale.PredictSettings(**{"keypoint_model": None, **other}).fingerprint() != fp, other
    img = tmp_path / "a.jpg"
    img.write_bytes(Path(inputs[0], "f0000.jpg").read_bytes())
    (task,) = scale.plan_tasks([img])
    key = scale.task_key(task, fp)
    assert scale.task_key(task, fp) == key
    os.utime(img, ns=(0, 0))
    assert scale.task_key(task, fp) != key
    assert scale.shard_path(tmp_path, task, key).name.startswith("000000-")


def test_killed_run_resumes_without_recomputing(cluster, inputs, local_csv, tmp_path):
    """A real crash: the whole process group (driver, its local cluster, the actors) gets SIGKILL once
    the first shard is on disk; the rerun keeps every finished shard untouched."""
    out, shards = tmp_path / "ray.csv", tmp_path / "shards"
    cmd = [sys.executable, "-m", "ferlib", "predict", *inputs, "--max-frames", str(MAX_FRAMES), "--out", str(out),
           "--engine", "ray", "--workers", "1", "--image-batch", "1", "--shard-dir", str(shards)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(shards.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {f: f.stat().st_mtime_ns for f in shards.glob("*.json")}
    assert before, "the killed run wrote no shard"
    assert not out.exists() or len(before) == 7  # killed before the end (or, on a fast machine, after it)
    settings = scale.PredictSettings(keypoint_model=str(shipped_keypoint_model()), max_frames=MAX_FRAMES)
    run = scale.predict_ray(inputs, settings, shards, workers=2, image_batch=1, progress=False)
    assert (run.tasks, run.skipped) == (7, len(before))
    assert all(f.stat().st_mtime_ns == m for f, m in before.items())
    scale.write_csv(run.report.frame, out)
    assert out.read_bytes() == local_csv.read_bytes()


def test_ray_predict_from_a_folder_holding_a_ferlib_folder(inputs, local_csv, tmp_path):
    """The `ferlib` command run where the working directory holds a `ferlib/` folder (here an empty
    one; the checkout itself, seen from its parent folder): Ray puts that directory first on its
    workers' sys.path, where it shadowed the editable install ("cannot import name '__version__'
    from 'ferlib' (unknown location)"); the workers import the driver's ferlib."""
    command = Path(sys.executable).with_name("ferlib")
    if not command.is_file():
        pytest.skip(f"no `ferlib` command next to {sys.executable} (./setup.sh installs it)")
    (tmp_path / "ferlib").mkdir()
    (tmp_path / "a.jpg").write_bytes(Path(inputs[0], "f0000.jpg").read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed ferlib, as a user runs it
    proc = subprocess.run([str(command), "predict", "a.jpg", "--out", "out.csv", "--engine", "ray",
                           "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    ref = pd.read_csv(local_csv, keep_default_na=False)
    ref = ref[ref["source"].str.endswith("f0000.jpg")]
    assert list(got["source"]) == ["a.jpg"] * len(ref) and len(ref) >= 1
    probs = [c for c in got.columns if c.startswith("p_")]
    assert list(got["label"]) == list(ref["label"])
    np.testing.assert_allclose(got[probs].astype(float).to_numpy(), ref[probs].astype(float).to_numpy(), atol=1e-4)


def test_ray_extract_fills_the_same_cache(cluster, inputs, tmp_path):
    paths = sorted(str(p) for p in Path(inputs[0]).glob("f*.jpg"))
    df = pd.DataFrame({"path": paths, "label": "happy", "split": "train"})
    local = extract_landmarks(df, cache_dir=tmp_path / "local", workers=1, progress=False)
    with scale.RayExtractRunner(workers=1, batch=2) as runner:
        remote = extract_landmarks(df, cache_dir=tmp_path / "ray", runner=runner, progress=False)
        assert runner._started is False  # the module's cluster stays up
    assert remote.n_extracted == local.n_extracted == len(paths)
    np.testing.assert_array_equal(remote.detected, local.detected)
    assert remote.detected.sum() >= 4
    np.testing.assert_allclose(remote.landmarks, local.landmarks, atol=1e-4, equal_nan=True)
    again = extract_landmarks(df, cache_dir=tmp_path / "ray", runner=lambda *a: iter(()), progress=False)
    assert again.n_cached == len(paths) and again.n_extracted == 0  # resumed from the cache, nothing recomputed


def test_bad_engine_input(tmp_path, capsys):
    out = str(tmp_path / "x.csv")
    assert main(["predict", str(FIXTURE_CLIP), "--out", out, "--engine", "ray", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["predict", str(FIXTURE_CLIP), "--out", out, "--engine", "ray", "--address", "127.0.0.1:1"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert main(["predict", str(FIXTURE_CLIP), "--out", out, "--engine", "ray", "--address", "nonsense"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert main(["predict", str(FIXTURE_CLIP), "--out", out, "--workers", "2"]) == 2
    assert "are for --engine ray" in capsys.readouterr().err
    assert main(["predict", str(FIXTURE_CLIP), "--out", out, "--engine", "ray", "--image-batch", "0"]) == 2
    assert "--image-batch must be at least 1" in capsys.readouterr().err
    with pytest.raises(InputError, match="--address is for --engine ray"):
        with scale.extract_runner("local", "127.0.0.1:6379"):
            pass


def test_an_error_in_an_actor_comes_back_as_itself(cluster, inputs, tmp_path):
    with pytest.raises(ModelFileError, match="nope_model"):
        scale.predict_ray(inputs[:1], scale.PredictSettings(model="nope_model"), tmp_path / "s", workers=1,
                          progress=False)


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(scale.RayMissingError, match=r"pip install -e \.\[scale\]"):
        scale.start_ray(None, 1)


def test_ray_is_not_imported_by_the_local_engine():
    code = "import sys, ferlib.cli, ferlib.scale; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_plan_tasks_keeps_input_order():
    paths = [Path(p) for p in ("a.jpg", "b.png", "c.mp4", "d.jpg", "e.jpg", "f.jpg", "g.avi")]
    tasks = scale.plan_tasks(paths, image_batch=2)
    assert [(t.kind, t.paths) for t in tasks] == [
        ("images", ("a.jpg", "b.png")), ("video", ("c.mp4",)), ("images", ("d.jpg", "e.jpg")),
        ("images", ("f.jpg",)), ("video", ("g.avi",))]
    assert [t.index for t in tasks] == list(range(5))
