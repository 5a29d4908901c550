"""Durability, for real: a subprocess records (the Studio's recorder) or trains (the Train page's job
runner) into a Store, is killed with SIGKILL, and the app's start-up check must leave a consistent
catalogue, at most the in-flight sample lost, the interrupted run marked and the live model intact."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ferlib.classes import FER7
from ferlib.inference.checkpoint import load_checkpoint, make_card, save_checkpoint
from ferlib.inputs import spec_for_model
from ferlib.models import create_model
from ferlib.store import Store
from tests.helpers import FIXTURE_CLIP, ROOT

pytestmark = pytest.mark.slow

# The Studio page's recording path: StudioRecorder.recv on every frame, storing through the Store.
# Each fsync announces itself and is slow, so that the test can kill the child while a sample is written.
RECORDER = r"""
import sys, time, av
from ferlib import fsutil
from ferlib.io import iter_video
from ferlib.store import Store
from webapp.resources import make_extractor
from webapp.video import StudioRecorder

real_fsync = fsutil.os.fsync
def slow_fsync(fd):
    print("fsync", flush=True)
    time.sleep(0.15)
    real_fsync(fd)
fsutil.os.fsync = slow_fsync
store = Store()
sid = store.session_by_name("kill me") or store.create_session("kill me")
rec = StudioRecorder(store, make_extractor, sid, sys.argv[2], "indoor", rate_hz=1e6)
rec.recording = True
while True:
    for i, ts, bgr in iter_video(sys.argv[1]):
        before = rec.saved
        rec.recv(av.VideoFrame.from_ndarray(bgr, format="bgr24"))
        if rec.saved != before:
            print("committed", store.count_samples(sid), flush=True)
"""

# The Train page's job runner (webapp.jobs.start), training far longer than the test waits.
TRAINER = r"""
import sys
from ferlib.store import Store
from webapp import jobs

store = Store()
job = jobs.start(store, jobs.TrainSpec(name="tuned", session_ids=[int(sys.argv[1])], epochs=100000,
                                       batch_size=2, patience=0))
print("run", job.run_id, flush=True)
job.thread.join()
print("ended", job.status, job.message, flush=True)
"""


def _spawn(code: str, data: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FERLIB_DATA": str(data), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL


def _restart(data: Path, monkeypatch) -> Store:
    """What the app does at start-up: webapp.resources.get_store() opens the Store and checks it."""
    from webapp import resources

    monkeypatch.setenv("FERLIB_DATA", str(data))
    resources._store_for.clear()
    return resources.get_store()


def _assert_consistent(st: Store) -> None:
    rows = st.samples()
    listed = {st.path_of(p) for col in ("landmarks_path", "crop_path") for p in rows[col] if isinstance(p, str)}
    on_disk = {p for p in (st.root / "sessions").rglob("*") if p.is_file()}
    assert on_disk == listed, "every row's files exist and no file is without a row (no temp files)"
    for r in rows.itertuples():  # atomic writes: no torn file
        pts = st.load_landmarks(r.id)
        assert pts.shape == (478, 3) and np.isfinite(pts).all()
        crop = st.load_crop(r.id)
        assert crop is not None and crop.shape == (112, 112, 3)
    assert st.check().clean


def _leftovers(data: Path, st: Store) -> set[Path]:
    rows = st.samples()
    listed = {st.path_of(p) for col in ("landmarks_path", "crop_path") for p in rows[col] if isinstance(p, str)}
    return {p for p in (data / "sessions").rglob("*") if p.is_file()} - listed


def test_kill_9_while_recording(tmp_path, monkeypatch):
    data = tmp_path / "data"
    committed = 0
    # round 1: killed inside the landmarks file's fsync; round 2: inside the crop's (landmarks in place)
    for nth_fsync, emotion, more in ((1, "happy", 3), (2, "sad", 4)):
        child = _spawn(RECORDER, data, str(FIXTURE_CLIP), emotion)
        try:
            last, fsyncs = committed, 0
            deadline = time.monotonic() + 120
            while fsyncs < nth_fsync:
                line = child.stdout.readline()
                assert line, "the recorder died before the kill"
                assert time.monotonic() < deadline, "the recorder is too slow"
                if line.startswith("committed"):
                    last = int(line.split()[1])
                elif line.startswith("fsync") and last >= committed + more:
                    fsyncs += 1
        finally:
            _kill(child)
        assert _leftovers(data, Store(data)), "the kill left a half-written sample behind"
        st = _restart(data, monkeypatch)
        _assert_consistent(st)
        n = st.count_samples(st.session_by_name("kill me"))
        assert n == last, f"child committed {last} samples, the catalogue holds {n}: only the one in flight is lost"
        committed = n
    assert st.samples()["emotion"].value_counts().to_dict() == {"happy": 3, "sad": 4}


def _landmarks(seed: int, label: int) -> np.ndarray:
    face = np.load(ROOT / "ferlib" / "assets" / "canonical_face.npy").astype(np.float32)
    rng = np.random.default_rng(seed)
    pts = face * 100 + 240 + rng.normal(0, 0.8, face.shape).astype(np.float32)
    pts[:, 1] += label * 6 * (face[:, 1] > 0.5)  # a class-dependent lower-face shift
    return pts.astype(np.float32)


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_kill_9_while_training(tmp_path, monkeypatch):
    data = tmp_path / "data"
    st = Store(data)
    sid = st.create_session("me")
    crop = cv2.cvtColor(np.full((112, 112), 128, np.uint8), cv2.COLOR_GRAY2BGR)
    for k in range(40):
        emo = ("happy", "sad")[k // 20]
        st.add_sample(sid, emo, _landmarks(k, k // 20), crop=crop, frame_index=k)
    torch.manual_seed(0)
    base = create_model("landmark_cnn1d", num_classes=7)
    wpath, cpath = save_checkpoint(base, st.model_dir("base") / "model", make_card(base, FER7, spec_for_model(base)))
    base_id = st.add_model("base", wpath, load_checkpoint(wpath)[1])
    st.set_live_model(base_id)
    before = {p: _sha(p) for p in (wpath, cpath)}

    child = _spawn(TRAINER, data, str(sid))
    try:
        run_id = int(child.stdout.readline().split()[1])
        deadline = time.monotonic() + 120
        while not ((st.get_run(run_id)["metrics"] or {}).get("history")):  # at least one epoch trained
            assert child.poll() is None, "the training job ended before the kill"
            assert time.monotonic() < deadline, "training did not report an epoch"
            time.sleep(0.2)
        assert st.get_run(run_id)["status"] == "running"
    finally:
        _kill(child)
    assert st.get_run(run_id)["status"] == "running", "a killed job cannot mark itself"

    st2 = _restart(data, monkeypatch)
    run = st2.get_run(run_id)
    assert run["status"] == "interrupted" and run["ended"] is not None
    assert run["metrics"]["history"], "the epochs trained before the kill stay recorded"
    live = st2.live_model()
    assert live is not None and live["id"] == base_id
    assert list(st2.models()["id"]) == [base_id], "nothing half-registered"
    assert {p: _sha(p) for p in before} == before
    model, card = load_checkpoint(live["abs_path"])
    assert card["weights_sha256"] == load_checkpoint(wpath)[1]["weights_sha256"]
    with torch.no_grad():
        for k, v in base.state_dict().items():
            assert torch.equal(model.state_dict()[k], v)
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]
    _assert_consistent(st2)
