"""The SQLite store: atomic files, crash repair, name validation, full disk, concurrency, deletion."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ferlib import fsutil
from ferlib import store as store_mod
from ferlib.errors import InputError, StorageError
from ferlib.store import Store, pose_bin, validate_name
from ferlib.store import check as check_mod
from ferlib.store import sessions as sessions_mod
from tests.helpers import ROOT


def _pts(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, (478, 3)).astype(np.float32)


def _crop(v: int = 100) -> np.ndarray:
    img = np.full((64, 64, 3), v, np.uint8)
    img[10:20, 10:50] = (0, 0, 255)
    return img


@pytest.fixture
def st(tmp_path: Path) -> Store:
    return Store(tmp_path / "data")


def _files(s: Store) -> list[Path]:
    return sorted(p for p in (s.root / "sessions").rglob("*") if p.is_file())


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FERLIB_DATA", str(tmp_path / "elsewhere"))
    assert store_mod.default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("FERLIB_DATA")
    monkeypatch.setenv("FERLIB_HOME", str(tmp_path / "home"))
    assert store_mod.default_root() == tmp_path / "home" / "data"


def test_add_sample_roundtrip(st):
    sid = st.create_session("alice 1", "indoor")
    crop, pts = _crop(), _pts()
    i = st.add_sample(sid, "Happiness", pts, crop=crop, pose=(-35.0, 3.0, 1.0), confidence=0.9, frame_index=7)
    np.testing.assert_array_equal(st.load_landmarks(i), pts)
    np.testing.assert_array_equal(st.load_crop(i), crop)
    row = st.samples([sid]).iloc[0]
    assert (row.emotion, row.condition, row.frame_index, row.session) == ("happy", "indoor", 7, "alice 1")
    assert row.pose_bin == "yaw <-30|pitch -8..8" == pose_bin(-35.0, 3.0)
    assert len(_files(st)) == 2
    # the catalogue survives a new Store on the same folder
    assert Store(st.root).count_samples(sid) == 1


def test_journal_is_wal_and_foreign_keys_on(st):
    c = st._conn()
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1


@pytest.mark.parametrize("name", ["../etc", "a/b", "a\\b", "bad\nname", "tab\there", "", "   ", "..",
                                  "x" * 65, " lead", "emoji😀", "semi;colon", None])
def test_unsafe_names_rejected(st, name):
    with pytest.raises(InputError):
        validate_name(name)
    with pytest.raises(InputError):
        st.create_session(name)
    assert st.sessions().empty


def test_safe_names_and_duplicates(st):
    for n in ["Alice", "bob_2 outdoor", "v1.2-final", "x" * 64]:
        validate_name(n)
    st.create_session("Alice")
    with pytest.raises(InputError, match="already used"):
        st.create_session("Alice")


def test_bad_sample_inputs(st):
    sid = st.create_session("s")
    with pytest.raises(InputError, match="unknown emotion"):
        st.add_sample(sid, "bored", _pts())
    with pytest.raises(InputError, match="478, 3"):
        st.add_sample(sid, "happy", np.zeros((468, 3)))
    with pytest.raises(InputError, match="finite"):
        st.add_sample(sid, "happy", np.full((478, 3), np.nan))
    with pytest.raises(InputError, match="crop"):
        st.add_sample(sid, "happy", _pts(), crop=np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(InputError, match="condition"):
        st.add_sample(sid, "happy", _pts(), condition="space")
    with pytest.raises(InputError, match="no session"):
        st.add_sample(999, "happy", _pts())
    assert st.count_samples() == 0 and _files(st) == []


def test_landmarks_only_stores_no_pixels(st):
    sid = st.create_session("private", landmarks_only=True)
    i = st.add_sample(sid, "sad", _pts(), crop=_crop())
    assert st.load_crop(i) is None
    assert st.samples([sid]).iloc[0].crop_path is None
    assert [p.suffix for p in _files(st)] == [".npy"]


def test_full_disk_during_write_loses_nothing(st, monkeypatch):
    sid = st.create_session("s")
    first = st.add_sample(sid, "happy", _pts(1), crop=_crop())
    before = _files(st)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left"):
        st.add_sample(sid, "sad", _pts(2), crop=_crop())
    monkeypatch.undo()
    # nothing half-written, nothing already saved lost
    assert _files(st) == before
    assert not list(st.root.rglob("*.tmp"))
    assert st.count_samples() == 1
    np.testing.assert_array_equal(st.load_landmarks(first), _pts(1))
    # the store keeps working afterwards
    st.add_sample(sid, "sad", _pts(2), crop=_crop())
    assert st.count_samples() == 2


def test_png_write_failure_removes_the_landmarks_file(st, monkeypatch):
    sid = st.create_session("s")
    real = sessions_mod.atomic_write_bytes

    def fail_png(path, data):
        if Path(path).suffix == ".png":
            raise StorageError("disk full")
        real(path, data)

    monkeypatch.setattr(sessions_mod, "atomic_write_bytes", fail_png)
    with pytest.raises(StorageError):
        st.add_sample(sid, "happy", _pts(), crop=_crop())
    assert _files(st) == [] and st.count_samples() == 0


def test_catalogue_failure_removes_files(st, monkeypatch):
    sid = st.create_session("s")
    monkeypatch.setattr(sessions_mod, "pose_bin", lambda y, p: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        st.add_sample(sid, "happy", _pts(), crop=_crop())
    assert _files(st) == [] and st.count_samples() == 0


_CRASH = r"""
import os, sys, numpy as np
from ferlib import store as m
s = m.Store(sys.argv[1])
sid = s.session_by_name("rec")
def die(self):
    os._exit(9)   # killed after the files of the sample in flight were written, before its row
s.add_sample(sid, "happy", np.ones((478, 3), np.float32), crop=np.zeros((8, 8, 3), np.uint8))
m.Store._tx = die
s.add_sample(sid, "sad", np.ones((478, 3), np.float32), crop=np.zeros((8, 8, 3), np.uint8))
"""


def test_crash_mid_sample_loses_only_that_sample(st):
    sid = st.create_session("rec")
    st.add_sample(sid, "neutral", _pts(), crop=_crop())
    st.start_run("m", {"epochs": 1}, pid=999_999_9)  # a dead process
    p = subprocess.run([sys.executable, "-c", _CRASH, str(st.root)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 9, p.stderr
    assert len(_files(st)) == 6  # 2 saved samples + the orphan pair of the one in flight
    s2 = Store(st.root)
    rep = s2.check()
    assert len(rep.orphan_files_removed) == 2 and rep.runs_interrupted == [1]
    assert sorted(s2.samples()["emotion"]) == ["happy", "neutral"]
    assert len(_files(s2)) == 4
    assert s2.get_run(1)["status"] == "interrupted"
    assert s2.check().clean


def test_check_removes_tmp_files_and_rows_without_files(st):
    sid = st.create_session("s")
    a = st.add_sample(sid, "happy", _pts(), crop=_crop())
    b = st.add_sample(sid, "sad", _pts(), crop=_crop())
    (st.session_dir(sid) / ".x.npy.1234.tmp").write_bytes(b"half")
    st.path_of(st.samples().set_index("id").loc[b, "landmarks_path"]).unlink()
    rep = st.check()
    assert rep.rows_without_files_removed == [b]
    assert any(f.endswith(".tmp") for f in rep.orphan_files_removed)
    assert list(st.samples()["id"]) == [a]
    assert len(_files(st)) == 2


def test_check_removes_temp_files_a_killed_run_left_but_not_an_active_runs(st):
    """A process killed while it wrote a run's resume.pt (or curves, or a model) leaves the atomic
    write's temp file; the start-up check removes it, except in the folder of a run still going."""
    mine = st.start_run("m", {})
    dead = st.start_run("m", {}, pid=999_999_9)
    left = [st.root / "runs" / str(dead) / ".resume.pt.0badf00d.tmp",
            st.root / "models" / "x" / ".model.json.1234abcd.tmp"]
    kept = st.root / "runs" / str(mine) / ".resume.pt.feedbeef.tmp"
    for f in [*left, kept]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half")
    (st.root / "runs" / str(dead) / "curves.json").write_text("[]")
    rep = st.check(active_run_ids=[mine])
    assert sorted(rep.temp_files_removed) == sorted(st._rel(f) for f in left) and not rep.clean
    assert not any(f.exists() for f in left) and kept.exists()
    assert (st.root / "runs" / str(dead) / "curves.json").exists()
    assert st.check(active_run_ids=[mine]).clean


def test_check_keeps_own_active_runs(st):
    mine = st.start_run("m", {})
    other = st.start_run("m", {})
    rep = st.check(active_run_ids=[mine])
    assert rep.runs_interrupted == [other]
    assert st.get_run(mine)["status"] == "running"


def test_delete_sample_and_session_remove_files(st):
    s1, s2 = st.create_session("one"), st.create_session("two")
    a = st.add_sample(s1, "happy", _pts(), crop=_crop())
    st.add_sample(s1, "sad", _pts(), crop=_crop())
    st.add_sample(s2, "sad", _pts(), crop=_crop())
    st.delete_sample(a)
    assert st.count_samples(s1) == 1 and len(_files(st)) == 4
    with pytest.raises(InputError):
        st.load_landmarks(a)
    st.delete_session(s1)
    assert not st.session_dir(s1).exists()
    assert list(st.sessions()["name"]) == ["two"] and st.count_samples() == 1
    assert len(_files(st)) == 2


def test_concurrent_recorders_mix_nothing(st):
    ids = {n: st.create_session(n) for n in ("tab a", "tab b")}
    errors: list[BaseException] = []

    def record(name: str, emotion: str, seed: int):
        try:
            for k in range(40):
                st.add_sample(ids[name], emotion, _pts(seed + k), crop=_crop(seed % 255), frame_index=k)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=record, args=("tab a", "happy", 0)),
          threading.Thread(target=record, args=("tab b", "sad", 1000))]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    df = st.samples()
    for name, emo, seed in (("tab a", "happy", 0), ("tab b", "sad", 1000)):
        part = df[df.session == name]
        assert len(part) == 40 and set(part.emotion) == {emo}
        assert sorted(part.frame_index) == list(range(40))
        for r in part.itertuples():
            np.testing.assert_array_equal(st.load_landmarks(r.id), _pts(seed + r.frame_index))
    assert len(_files(st)) == 160 and st.check().clean


def test_coverage_counts_and_missing_cells(st):
    sid = st.create_session("s", "outdoor")
    st.add_sample(sid, "happy", _pts(), pose=(0, 0, 0))
    st.add_sample(sid, "happy", _pts(), pose=(2, 1, 0))
    st.add_sample(sid, "angry", _pts(), pose=(45, -25, 0), condition="indoor")
    cov = st.coverage()
    assert set(cov.columns) == {"emotion", "condition", "yaw_bin", "pitch_bin", "count"}
    assert len(cov) == 7 * 2 * 5 * 5 and cov["count"].sum() == 3
    cell = cov.set_index(["emotion", "condition", "yaw_bin", "pitch_bin"])["count"]
    assert cell[("happy", "outdoor", "-10..10", "-8..8")] == 2
    assert cell[("angry", "indoor", ">30", "<-20")] == 1
    assert (cov["count"] == 0).sum() == 7 * 2 * 25 - 2
    assert st.coverage(session_ids=[]).eq(0)["count"].all()


def test_export_zip(st, tmp_path):
    s1 = st.create_session("one")
    s2 = st.create_session("lm", landmarks_only=True)
    a = st.add_sample(s1, "happy", _pts(3), crop=_crop())
    st.add_sample(s2, "sad", _pts(4))
    out = st.export_zip([s1, s2], tmp_path / "out" / "ds.zip")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert names == {f"happy/{s1}_{a}.npy", f"happy/{s1}_{a}.png", f"sad/{s2}_2.npy", "samples.csv"}
        assert b"happy" in z.read("samples.csv")
    assert not list(out.parent.glob("*.tmp"))
    with pytest.raises(InputError):
        st.export_zip([42], tmp_path / "x.zip")


def test_models_live_is_exclusive(st, tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x")
    a = st.add_model("mine", f, {"classes": ["happy"]})
    b = st.add_model("mine", f, {"classes": ["happy"]})
    assert [st.get_model(i)["version"] for i in (a, b)] == [1, 2]
    assert st.live_model() is None
    st.set_live_model(a)
    st.set_live_model(b)
    assert st.live_model()["id"] == b and st.models()["is_live"].sum() == 1
    with pytest.raises(InputError):
        st.set_live_model(99)
    assert st.live_model()["id"] == b
    with pytest.raises(InputError):
        st.add_model("../x", f, {})
    d = st.model_dir("My Model")
    assert d.parent == st.root / "models" and d.name.startswith("my-model-")


def test_run_bookkeeping(st):
    r = st.start_run("mine", {"epochs": 3})
    st.update_run(r, {"loss": [1.0, 0.5]})
    assert st.get_run(r)["metrics"] == {"loss": [1.0, 0.5]}
    st.finish_run(r, "done")
    got = st.get_run(r)
    assert got["status"] == "done" and got["ended"] and got["metrics"] == {"loss": [1.0, 0.5]}
    with pytest.raises(InputError):
        st.finish_run(r, "exploded")


def test_unwritable_data_folder_is_storage_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot open the data folder"):
        Store(f / "data")


def test_pid_alive():
    assert check_mod._pid_alive(os.getpid())
    assert not check_mod._pid_alive(999_999_9)
