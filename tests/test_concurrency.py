"""Two recorders writing to two sessions of one Store at once lose and mix nothing: two Studio
recorders in two threads on real frames (what two browser tabs are inside the app), and two
processes on one data folder."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import av
import numpy as np
import pytest

from ferlib.io import iter_video
from ferlib.store import Store
from tests.helpers import ROOT

N_FRAMES = 24


@pytest.fixture(scope="module")
def clip(fixture_clip) -> list[np.ndarray]:
    # every 8th frame of the laughing half: one clear face each
    return [f for i, _, f in iter_video(fixture_clip, max_frames=240 + 8 * N_FRAMES) if i >= 240 and i % 8 == 0]


def test_two_studio_recorders_in_two_threads(tmp_path, clip):
    from webapp.resources import make_extractor
    from webapp.video import StudioRecorder, drain

    st = Store(tmp_path / "data")  # one Store shared by every tab, as get_store() gives it
    tabs = {"left tab": ("happy", clip), "right tab": ("sad", [f[:, ::-1].copy() for f in clip])}
    recs = {name: StudioRecorder(st, make_extractor, st.create_session(name), emo, "indoor", rate_hz=1e6)
            for name, (emo, _) in tabs.items()}
    start = threading.Barrier(len(recs))
    errors: list[BaseException] = []

    def stream(name: str) -> None:
        rec, frames = recs[name], tabs[name][1]
        rec.recording = True
        try:
            start.wait()
            for f in frames:
                rec.recv(av.VideoFrame.from_ndarray(f, format="bgr24"))
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            rec.on_ended()

    threads = [threading.Thread(target=stream, args=(n,)) for n in recs]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert not errors and not any(t.is_alive() for t in threads)
    df = st.samples()
    for name, rec in recs.items():
        assert not [m for m in drain(rec.results) if "error" in m]
        assert rec.saved >= N_FRAMES - 2, f"{name}: a face in (nearly) every frame"
        part = df[df.session == name]
        assert len(part) == rec.saved, f"{name}: every saved sample is in the catalogue"
        assert set(part.emotion) == {tabs[name][0]}
        assert sorted(part.frame_index) == sorted(set(part.frame_index)), "no sample stored twice"
        # the right tab's frames are mirrored: its faces lie on the other half of the frame
        cx = np.array([st.load_landmarks(i)[:, 0].mean() for i in part.id])
        assert ((cx > 320) if name == "left tab" else (cx < 320)).all(), f"{name}: samples of the other tab"
        folder = {p.name for p in st.session_dir(int(part.session_id.iloc[0])).iterdir()}
        assert folder == {p.rsplit("/", 1)[1] for c in ("landmarks_path", "crop_path") for p in part[c]}
    assert st.check().clean


WRITER = r"""
import sys, numpy as np
from ferlib.store import Store
st = Store(sys.argv[1])
sid = st.session_by_name(sys.argv[2])
for k in range(int(sys.argv[3])):
    st.add_sample(sid, sys.argv[4], np.full((478, 3), float(sys.argv[5]) + k, np.float32),
                  crop=np.full((32, 32, 3), k, np.uint8), frame_index=k)
"""


def test_two_processes_on_one_data_folder(tmp_path):
    st = Store(tmp_path / "data")
    n = 60
    plan = {"proc a": ("happy", 0), "proc b": ("sad", 10_000)}
    for name in plan:
        st.create_session(name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(st.root), name, str(n), emo, str(base)],
                              cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
             for name, (emo, base) in plan.items()]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    df = st.samples()
    for name, (emo, base) in plan.items():
        part = df[df.session == name]
        assert len(part) == n and set(part.emotion) == {emo}
        assert sorted(part.frame_index) == list(range(n))
        for r in part.itertuples():
            np.testing.assert_array_equal(st.load_landmarks(r.id), np.full((478, 3), base + r.frame_index, np.float32))
            assert int(st.load_crop(r.id)[0, 0, 0]) == r.frame_index
    assert st.check().clean


def test_live_streams_never_share_a_pipeline_and_reuse_closed_ones(tmp_path, clip):
    """Each open stream has its own Pipeline (MediaPipe graphs are not thread-safe); a closed
    stream's Pipeline is reset and reused by the next one instead of building new graphs, which
    MediaPipe never fully frees (docs/reliability.md)."""
    import torch

    from ferlib.classes import FER7
    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model
    from webapp.resources import make_pipeline
    from webapp.video import LiveProcessor, drain

    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=7)
    path = str(save_checkpoint(m, tmp_path / "m", make_card(m, FER7, spec_for_model(m)))[1])
    frame = av.VideoFrame.from_ndarray(clip[0], format="bgr24")

    def open_stream(smoothing: str = "none") -> LiveProcessor:
        proc = LiveProcessor(make_pipeline, path, smoothing)
        proc.recv(frame)
        return proc

    a, b = open_stream(), open_stream()
    assert a._pipeline is not b._pipeline
    a._pipeline.set_neutral_baseline(a._pipeline.extractor.process(clip[0])[0].landmarks)  # one user's state
    first = {id(a._pipeline), id(b._pipeline)}
    a.on_ended()
    b.on_ended()
    c, d, e = open_stream("ema"), open_stream(), open_stream()
    assert {id(c._pipeline), id(d._pipeline)} == first, "closed streams' pipelines are reused"
    assert id(e._pipeline) not in first and len({id(p._pipeline) for p in (c, d, e)}) == 3
    for p in (c, d, e):
        assert p._pipeline.baseline is None and p._pipeline.smoother.kind == p.smoothing, "reset for the new stream"
        items = drain(p.results)
        assert len(items) == 1 and items[0]["faces"] == 1, items
        p.on_ended()
