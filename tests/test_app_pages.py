"""Every page of the Streamlit app through streamlit.testing.v1.AppTest.

Only `streamlit_webrtc.webrtc_streamer` is replaced (no browser here): the fake builds the page's
real video processor, and the tests push real frames of the committed fixture clip through it, so
MediaPipe, the store and the models run for real. Data goes to a temporary FERLIB_DATA.
"""
from __future__ import annotations

import base64
import json
import re
import time
from types import SimpleNamespace

import av
import numpy as np
import pytest
import streamlit_webrtc
from streamlit.testing.v1 import AppTest

from tests.helpers import FIXTURE_CLIP, ROOT
from webapp import video

TIMEOUT = 60


@pytest.fixture(scope="module")
def clip_faces():
    """(frame BGR, main Face, emotion) for every 12th frame of the fixture clip: sad before 9 s, happy after 10 s."""
    from ferlib.faces.landmarks import LandmarkExtractor
    from ferlib.io import iter_video

    out = []
    with LandmarkExtractor(mode="video", max_faces=1) as ex:
        for i, ts, bgr in iter_video(FIXTURE_CLIP):
            if i % 12 or 9000 <= ts < 10000:
                continue
            faces = ex.process(bgr, ts)
            if faces:
                out.append((bgr, faces[0], "sad" if ts < 9000 else "happy"))
    assert len(out) > 20
    return out


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("FERLIB_DATA", str(d))
    return d


@pytest.fixture
def store(data_dir):
    from webapp.resources import get_store

    return get_store()


def _seed(store, clip_faces, name="seeded", landmarks_only=False) -> int:
    from ferlib.faces.landmarks import face_crop

    sid = store.create_session(name, "indoor", landmarks_only)
    for k, (bgr, face, emo) in enumerate(clip_faces):
        store.add_sample(sid, emo, face.landmarks, crop=face_crop(bgr, face, 112, grey=False), pose=face.pose,
                         confidence=face.score, frame_index=k)
    return sid


class FakeStreamer:
    """Stands in for webrtc_streamer: records its arguments and, when 'playing', builds (once per
    key) the processor from the page's own video_processor_factory."""

    def __init__(self, playing: bool):
        self.playing, self.calls, self.procs = playing, [], {}

    def __call__(self, key, **kw):
        self.calls.append((key, kw))
        if self.playing and key not in self.procs:
            self.procs[key] = kw["video_processor_factory"]()
        return SimpleNamespace(video_processor=self.procs.get(key), state=SimpleNamespace(playing=self.playing))


@pytest.fixture
def streamer(monkeypatch):
    def make(playing: bool) -> FakeStreamer:
        fake = FakeStreamer(playing)
        monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake)
        return fake
    return make


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _plotly(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def _array(v) -> np.ndarray:
    """A plotly JSON array, plain or typed ({dtype, bdata, shape})."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(n) for n in str(v.get("shape", len(a))).split(",")])
    return np.asarray(v)


def _frame(bgr) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")


def _make_model(store, name="tiny", classes=("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")):
    """An (untrained) landmark model saved as a real checkpoint and registered in the store."""
    import torch

    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model

    torch.manual_seed(0)
    model = create_model("landmark_cnn1d", num_classes=len(classes))
    wpath, _ = save_checkpoint(model, store.model_dir(name) / "model",
                               make_card(model, list(classes), spec_for_model(model)))
    return store.add_model(name, wpath, json.loads(wpath.with_suffix(".json").read_text()))


# ------------------------------------------------------------------------------------- Home
def test_home_shows_counts(store, clip_faces, streamer):
    _seed(store, clip_faces)
    at = _app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Studio sessions"] == "1" and metrics["Samples"] == str(len(clip_faces))


# ------------------------------------------------------------------------------------- Studio
def test_studio_consent_gates_the_camera(store, streamer):
    fake = streamer(playing=True)
    at = _app("Studio")
    assert fake.calls == [] and "studio" not in fake.procs
    assert any("consent" in i.value.lower() for i in at.info)
    at.checkbox(key="studio_consent").check().run()
    assert not at.exception
    key, kw = fake.calls[-1]
    assert key == "studio" and kw["async_processing"] is True
    assert kw["rtc_configuration"] == {"iceServers": []}
    assert kw["media_stream_constraints"] == {"video": True, "audio": False}


def test_studio_records_real_frames_into_the_catalogue(store, clip_faces, streamer):
    fake = streamer(playing=True)
    at = _app("Studio")
    at.checkbox(key="studio_consent").check().run()
    at.text_input(key="studio_session").input("tab one").run()
    at.selectbox(key="studio_emotion").select("happy").run()
    at.slider(key="studio_rate").set_value(10.0).run()
    at.toggle(key="studio_recording").set_value(True).run()
    proc = fake.procs["studio"]
    assert proc.recording and proc.emotion == "happy"
    for bgr, _, _ in clip_faces[-6:]:
        out = proc.recv(_frame(bgr))
        assert out.to_ndarray(format="bgr24").shape == bgr.shape
        time.sleep(0.11)
    at.toggle(key="studio_recording").set_value(False).run()
    assert not proc.recording
    sid = store.session_by_name("tab one")
    n = store.count_samples(sid)
    assert n >= 4
    assert f"Samples recorded: {n}" in _text(at)
    df = store.samples([sid])
    assert set(df["emotion"]) == {"happy"} and df["crop_path"].notna().all()
    assert store.load_landmarks(int(df["id"].iloc[0])).shape == (478, 3)
    # single capture by button
    at.button(key="studio_capture").click().run()
    proc.recv(_frame(clip_faces[0][0]))
    assert store.count_samples(sid) == n + 1


def test_studio_landmarks_only_mode_stores_no_pixels(store, clip_faces, streamer):
    fake = streamer(playing=True)
    at = _app("Studio")
    at.checkbox(key="studio_consent").check().run()
    at.text_input(key="studio_session").input("private").run()
    at.toggle(key="studio_landmarks_only").set_value(True).run()
    at.button(key="studio_capture").click().run()
    fake.procs["studio"].recv(_frame(clip_faces[0][0]))
    df = store.samples([store.session_by_name("private")])
    assert len(df) == 1 and df["crop_path"].isna().all()
    assert not list(store.root.rglob("*.png"))


def test_studio_rejects_unsafe_session_name(store, streamer):
    streamer(playing=True)
    at = _app("Studio")
    at.checkbox(key="studio_consent").check().run()
    at.text_input(key="studio_session").input("../../etc").run()
    at.button(key="studio_capture").click().run()
    assert any("path separator" in e.value for e in at.error)
    assert store.sessions().empty


def test_studio_coverage_guide_from_seeded_store(store, clip_faces, streamer):
    streamer(playing=False)
    _seed(store, clip_faces, "seeded")
    at = _app("Studio")
    at.checkbox(key="studio_consent").check().run()
    at.text_input(key="studio_session").input("seeded").run()
    assert f"Session: seeded, {len(clip_faces)} samples in all" in _text(at)
    fig = _plotly(at)[0]
    heat = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert heat and "happy" in heat[0]["y"] and "yaw -10..10" in heat[0]["x"]
    z = _array(heat[0]["z"])  # indoor, yaw bins
    assert z.sum() == len(clip_faces) and (z == 0).any()  # and what is missing shows as 0
    pitch = [t for t in heat if t["x"][0].startswith("pitch")]
    assert pitch and _array(pitch[0]["z"]).sum() == len(clip_faces)  # its own panel: no sample counted twice
    assert all(t["x"][0].split()[0] == t["x"][-1].split()[0] for t in heat), "yaw and pitch share no row"
    assert fig["layout"]["coloraxis"]["cmin"] == 0
    # the personal-model guide: samples per emotion and view, and how many more each needs
    from ferlib.training.personal import SAMPLES_PER_VIEW, VIEWS

    guide = next(d.value for d in at.dataframe if "needed" in d.value.columns).set_index("emotion")
    assert guide.loc[["sad", "happy"], list(VIEWS)].to_numpy().sum() == len(clip_faces)
    expected = sum(max(0, SAMPLES_PER_VIEW - int(guide.loc[e, v])) for e in guide.index for v in VIEWS)
    assert guide["needed"].sum() == expected > 0  # the unrecorded emotions need every view
    assert (guide.loc[[e for e in guide.index if e not in ("sad", "happy")], "needed"] == 3 * SAMPLES_PER_VIEW).all()
    assert f"{expected} more samples to record" in _text(at)


def test_review_delete_session_removes_files(store, clip_faces, streamer):
    streamer(playing=False)
    keep = _seed(store, clip_faces[:3], "keep")
    gone = _seed(store, clip_faces[:4], "gone")
    folder = store.session_dir(gone)
    assert folder.exists()
    at = _app("Studio")
    at.selectbox(key="review_session").select(gone).run()
    assert at.button(key="review_delete_session").disabled
    at.checkbox(key="review_confirm").check().run()
    at.button(key="review_delete_session").click().run()
    assert not at.exception
    assert not folder.exists() and store.session_by_name("gone") is None
    assert store.count_samples(keep) == 3 and store.check().clean


def test_review_delete_sample_and_export(store, clip_faces, streamer):
    streamer(playing=False)
    sid = _seed(store, clip_faces[:3], "s")
    first = int(store.samples([sid])["id"].iloc[0])
    at = _app("Studio")
    at.button(key=f"del_sample_{first}").click().run()
    assert store.count_samples(sid) == 2 and len(list(store.session_dir(sid).iterdir())) == 4
    at.button(key="export_build").click().run()
    assert not at.exception
    import zipfile

    with zipfile.ZipFile(at.session_state["export_path"]) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 2


# ------------------------------------------------------------------------------------- Live
def test_live_without_models_says_so(store, streamer, tmp_path, monkeypatch):
    import ferlib.inference.pipeline

    monkeypatch.setattr(ferlib.inference.pipeline, "MODELS_DIR", tmp_path / "no-shipped-models")
    streamer(playing=False)
    at = _app("Live")
    assert any("No model" in e.value for e in at.error)


def test_live_runs_real_frames_through_the_pipeline(store, clip_faces, streamer):
    store.set_live_model(_make_model(store))  # the live model is the Live page's default
    fake = streamer(playing=True)
    at = _app("Live")
    key, kw = fake.calls[-1]
    assert key == "live" and kw["async_processing"] is True and kw["rtc_configuration"] == {"iceServers": []}
    proc = fake.procs["live"]
    for bgr, _, _ in clip_faces[:5]:
        out = proc.recv(_frame(bgr)).to_ndarray(format="bgr24")
        assert not np.array_equal(out, bgr)  # box, label and bars were drawn
    at.run()
    text = _text(at)
    assert "Frames processed: 5" in text and "FPS:" in text and "Latency p95:" in text
    assert "Prediction: **" in text and "Head pose: yaw" in text
    figs = _plotly(at)
    assert len(figs[0]["data"]) == 7 and len(figs[1]["data"]) == 2  # 7 class lines; FPS + latency
    at.toggle(key="live_mesh").set_value(True).run()
    assert proc.mesh is True
    # the keypoint retry reaches the stream's extractor, and goes off again
    at.toggle(key="live_keypoints").set_value(True).run()
    proc.recv(_frame(clip_faces[0][0]))
    assert proc._pipeline.extractor.keypoint_model.endswith("keypoint_regressor_fer2013.json")
    at.toggle(key="live_keypoints").set_value(False).run()
    proc.recv(_frame(clip_faces[0][0]))
    assert proc._pipeline.extractor.keypoint_model is None and proc._pipeline.extractor._realign is None
    # calibrate neutral: the mean normalised landmarks of the next frames reach the pipeline
    at.button(key="live_calibrate").click().run()
    for bgr, _, _ in clip_faces[:video.CALIBRATION_FRAMES]:
        proc.recv(_frame(bgr))
    assert proc.calibrated and proc._pipeline.baseline.shape == (478, 3)
    at.radio(key="live_smoothing").set_value("EMA").run()
    proc.recv(_frame(clip_faces[0][0]))
    assert proc._pipeline.smoother.kind == "ema"
    assert "Neutral baseline calibrated." in [c.value for c in at.caption]


def test_ice_servers_from_environment(monkeypatch):
    from ferlib.errors import InputError
    from webapp.resources import rtc_configuration

    monkeypatch.setenv("FERLIB_ICE_SERVERS", '[{"urls": ["stun:stun.example.org:3478"]}]')
    assert rtc_configuration() == {"iceServers": [{"urls": ["stun:stun.example.org:3478"]}]}
    monkeypatch.setenv("FERLIB_ICE_SERVERS", "not json")
    with pytest.raises(InputError, match="FERLIB_ICE_SERVERS"):
        rtc_configuration()


# ------------------------------------------------------------------------------------- Train
def _wait_job(run_id: int, timeout: float = 60.0):
    from webapp import jobs

    job = jobs.get(run_id)
    job.thread.join(timeout)
    assert not job.alive, "training did not finish in time"
    return job


def test_train_default_learns_the_face_in_one_click_and_goes_live(store, clip_faces, streamer):
    """Start with every default: the shipped default adapted with ferlib.training.personal's default method on
    every train/val sample; the test chunks are reported; the model goes live."""
    from ferlib.training.personal import DEFAULT_METHOD

    _seed(store, clip_faces, "me")
    at = _app("Train")
    assert at.selectbox(key="train_adapt").value == DEFAULT_METHOD
    assert not [n for n in at.number_input if n.key == "train_epochs"]  # no epochs to set
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    job = _wait_job(at.session_state["train_run"])
    assert job.status == "done", job.message
    at.run()
    assert any("Registered as my model v1" in s.value for s in at.success)
    live_before = store.live_model()
    at.button(key="train_make_live").click().run()
    live = store.live_model()
    assert live is not None and live != live_before and live["name"] == "my model"
    personal = live["card"]["training"]["personal"]
    assert personal["config"]["method"] == DEFAULT_METHOD
    assert sum(personal["report"]["per_class"].values()) == job.counts["train"] + job.counts.get("val", 0)
    assert job.test_metrics is not None and job.test_metrics["n"] == job.counts["test"]


def test_train_runs_in_background_registers_and_goes_live(store, clip_faces, streamer):
    _seed(store, clip_faces, "me")
    at = _app("Train")
    at.selectbox(key="train_adapt").set_value("train").run()  # the classic fine-tune: epochs, curves
    at.number_input(key="train_epochs").set_value(3).run()
    at.number_input(key="train_batch").set_value(8).run()
    at.text_input(key="train_name").input("mine").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    job = _wait_job(at.session_state["train_run"])
    assert job.status == "done", job.message
    at.run()
    assert any("Training status: done" in (p.proto.text or "") for p in at.get("progress"))
    assert job.fraction == job.progress == 1.0 and [p.proto.value for p in at.get("progress")] == [100]  # a full bar
    assert any("Registered as mine v1" in s.value for s in at.success)
    run = store.get_run(job.run_id)
    assert run["status"] == "done" and len(run["metrics"]["history"]) == len(job.history) >= 1
    run_dir = store.root / "runs" / str(job.run_id)  # the page cannot resume: no training state is kept
    assert (run_dir / "curves.json").is_file() and not (run_dir / "resume.pt").exists()
    curves = _plotly(at)[0]
    assert {t["name"] for t in curves["data"]} >= {"train_loss", "val_acc"}
    at.button(key="train_make_live").click().run()
    live = store.live_model()
    assert live["name"] == "mine" and live["card"]["data"]["studio_sessions"] == [store.session_by_name("me")]
    from ferlib.inference.checkpoint import load_checkpoint

    _, card = load_checkpoint(live["abs_path"])
    assert card["classes"][3] == "happy"


def test_train_progress_counts_the_planned_steps_and_ends_full():
    """webapp.jobs.train_progress, the bar's fraction after each ferlib.training.train event: steps done over
    the planned epochs' steps, and 1.0 at the loop's end, also when early stopping ends it after 6 of
    7 epochs (the bar stayed at 86 % while the run scored its test split and registered the model)."""
    from webapp.jobs import train_progress

    def ev(event, epoch, step=None, steps=4):
        return {"event": event, "epoch": epoch, "step": step, "steps": steps}

    assert train_progress(ev("step", 1, 1), 7) == pytest.approx(1 / 28)
    assert train_progress(ev("step", 3, 2), 7) == pytest.approx(10 / 28)
    assert train_progress(ev("epoch", 6, 4), 7) == pytest.approx(6 / 7)  # then early stopping ends the loop
    assert train_progress(ev("done", 4), 7) == 1.0  # its epoch is the best one; stopped early or not
    assert train_progress(ev("epoch", 7, 4), 7) == train_progress(ev("done", 7), 7) == 1.0
    assert train_progress(ev("step", 2, 9, steps=0), 1) == 1.0  # never past a full bar
    assert train_progress(ev("cancelled", 2), 7) is None and train_progress(ev("resumed", 3), 7) is None
    assert train_progress(ev("step", None), 7) is None


def test_a_finished_run_shows_a_full_bar(data_dir, monkeypatch):
    """A done run's bar is full whatever its events left in `progress` (here 6 of 7 epochs)."""
    from webapp import jobs

    job = jobs.TrainJob(run_id=987655, spec=jobs.TrainSpec(name="x", session_ids=[]), progress=6 / 7,
                        message="epoch 6/7")
    monkeypatch.setitem(jobs._JOBS, job.run_id, job)
    at = AppTest.from_file(str(ROOT / "pages" / "Train.py"), default_timeout=TIMEOUT)
    at.session_state["train_run"] = job.run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [p.proto.value for p in at.get("progress")] == [85]  # running: the steps done
    job.status, job.message = "done", "done (stopped early)"
    at.run()
    assert [(p.proto.value, p.proto.text) for p in at.get("progress")] == [
        (100, "Training status: done (stopped early)")]


def test_train_cancel(store, clip_faces, streamer):
    from webapp import jobs

    _seed(store, clip_faces, "me")
    at = _app("Train")
    at.selectbox(key="train_adapt").set_value("train").run()
    at.number_input(key="train_epochs").set_value(500).run()
    at.number_input(key="train_patience").set_value(0).run()
    at.number_input(key="train_batch").set_value(2).run()
    at.button(key="train_start").click().run()
    job = jobs.get(at.session_state["train_run"])
    try:
        at.button(key="train_cancel").click().run()
        assert job.cancel.is_set()
    finally:
        job.cancel.set()  # never leave a 500-epoch job running
    job = _wait_job(job.run_id)
    assert job.status == "cancelled"
    assert store.get_run(job.run_id)["status"] == "cancelled" and store.models().empty
    assert not (store.root / "runs" / str(job.run_id) / "resume.pt").exists()


def test_train_adds_an_imported_dataset_to_the_training_split(store, clip_faces, streamer, clip_dataset,
                                                               tmp_path, monkeypatch):
    from webapp.datasets import studio_table

    monkeypatch.setenv("FERLIB_CACHE", str(tmp_path / "cache"))
    sid = _seed(store, clip_faces, "me")
    studio_train = int((studio_table(store, [sid])["split"] == "train").sum())
    at = _app("Train")
    at.text_input(key="train_extra").input(f"  {clip_dataset}  ").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.error
    job = _wait_job(at.session_state["train_run"], timeout=120)
    assert job.status == "done", job.message
    data = store.get_model(job.model_id)["card"]["data"]
    (extra,) = [d for d in data["datasets"] if d["use"] == "train only"]  # the card schema of ferlib.training.workflow
    assert extra["kind"] == "folder" and extra["images"] == 32
    assert len(extra["sha256"]) == 64
    # the clip's 32 frames all show a face: every one of them joins the training split, none val/test
    assert data["n"]["train"] == studio_train + 32
    assert store.get_run(job.run_id)["config"]["extra_data"] == str(clip_dataset)


def test_train_cancel_while_finding_faces_in_the_extra_data(store, clip_faces, clip_dataset, tmp_path, monkeypatch):
    from webapp import jobs

    monkeypatch.setenv("FERLIB_CACHE", str(tmp_path / "cache"))  # empty cache: every image needs MediaPipe
    sid = _seed(store, clip_faces, "me")
    job = jobs.start(store, jobs.TrainSpec(name="mine", session_ids=[sid], extra_data=str(clip_dataset)))
    job.cancel.set()
    job = _wait_job(job.run_id)
    assert (job.status, job.message) == ("cancelled", "stopped by the user") and job.history == []
    assert store.get_run(job.run_id)["status"] == "cancelled" and store.models().empty
    assert not (store.root / "runs" / str(job.run_id)).exists(), "stopped before training started"


@pytest.mark.parametrize("typed, why", [("/no/such/dataset", "no such file or folder"),
                                        ("notes.txt", "expected a folder, a .zip or a .csv")])
def test_train_rejects_a_bad_extra_dataset_path(store, clip_faces, streamer, tmp_path, typed, why):
    _seed(store, clip_faces[:4], "me")
    if typed == "notes.txt":
        typed = str(tmp_path / typed)
        (tmp_path / "notes.txt").write_text("not a dataset")
    at = _app("Train")
    at.text_input(key="train_extra").input(typed).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert any(why in e.value and typed in e.value for e in at.error), [e.value for e in at.error]
    assert store.runs().empty


# ------------------------------------------------------------------------------------- Evaluate
def test_evaluate_shows_confusion_matrices_side_by_side(store, clip_faces, streamer):
    _seed(store, clip_faces, "me")
    a, b = _make_model(store, "first"), _make_model(store, "second")
    at = _app("Evaluate")
    from webapp.resources import model_choices

    picks = {c.store_id: c for c in model_choices(store) if c.store_id in (a, b)}
    # every session with samples preselected; the second model defaults to the shipped default
    assert at.multiselect(key="eval_sessions").value == [store.session_by_name("me")]
    assert at.selectbox(key="eval_model_2").value.label.startswith("shipped: ")
    at.selectbox(key="eval_model").set_value(picks[a]).run()
    at.selectbox(key="eval_model_2").set_value(picks[b]).run()
    at.radio(key="eval_split").set_value("all").run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["samples"]) == [len(clip_faces)] * 2
    assert list(table["model"]) == [picks[a].label, picks[b].label]
    assert any(f"n={len(clip_faces)} samples: a rough figure" in w.value for w in at.warning)
    titles = [f["layout"]["title"]["text"] for f in _plotly(at)]
    cms = [f for f in _plotly(at) if f["data"][0]["type"] == "heatmap"]
    assert len(cms) == 4  # counts + normalised for each of the two models
    counts = _array(cms[0]["data"][0]["z"])
    assert counts.sum() == len(clip_faces)
    cm_titles = [f["layout"]["title"]["text"] for f in cms]
    assert cm_titles[0].startswith("Counts") and cm_titles[1].startswith("Row-normalised")
    assert any("head-pose" in t for t in titles)
    pose = next(f for f in _plotly(at) if "head-pose" in f["layout"]["title"]["text"])
    texts = [t for trace in pose["data"] for t in trace["text"]]
    assert "no data" in texts and any(t.startswith("0% (n=") or "%" in t for t in texts if t != "no data")


def test_evaluate_on_a_folder_dataset(store, clip_faces, streamer, tmp_path, monkeypatch):
    import cv2

    monkeypatch.setenv("FERLIB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "faces"
    picks = clip_faces[:3] + clip_faces[-3:]
    for k, (bgr, _, emo) in enumerate(picks):
        (root / emo).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / emo / f"{k}.jpg"), bgr)
    (root / "happy" / "blank.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((200, 200, 3), np.uint8))[1])
    _make_model(store)
    at = _app("Evaluate")
    at.radio(key="eval_source").set_value("Folder or zip dataset").run()
    at.text_input(key="eval_folder").input(str(root)).run()
    default_index = at.selectbox(key="eval_model_2").index  # the shipped default
    at.selectbox(key="eval_model_2").select_index(0).run()  # this model alone
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error
    row = at.dataframe[0].value.iloc[0]
    assert row["samples"] == 7 and abs(row["detection rate"] - 6 / 7) < 1e-9  # the blank image has no face
    assert sum(f["data"][0]["type"] == "heatmap" for f in _plotly(at)) == 2
    # beside the shipped default, read as Live reads it (flip averaging; a turned face to its expert)
    at.selectbox(key="eval_model_2").select_index(default_index).run()
    assert at.selectbox(key="eval_model_2").value.label.startswith("shipped: ")
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["samples"]) == [7, 7]
    assert list(table["turned faces read by the expert"]) == ["", "0"]  # the clip's faces look at the camera


def test_train_defaults_fine_tune_the_shipped_default_on_every_session(store, clip_faces, streamer):
    from ferlib.inference.pipeline import DEFAULT_MODELS

    a = _seed(store, clip_faces, "big")
    b = _seed(store, clip_faces[:3], "small")  # the newest: it used to be the only one preselected
    at = _app("Train")
    assert sorted(at.multiselect(key="train_sessions").value) == sorted([a, b])
    base = at.selectbox(key="train_base").value
    shipped = [s for s in DEFAULT_MODELS if (ROOT / "models" / f"{s}.json").exists()]
    assert base is not None and base.label == f"shipped: {shipped[0]}"
    from ferlib.training.personal import DEFAULT_METHOD

    # personal adaptation by default; the classic fine-tune's settings appear when it is chosen
    assert at.selectbox(key="train_adapt").value == DEFAULT_METHOD
    assert not [c for c in at.checkbox if c.key == "train_freeze"]
    at.selectbox(key="train_adapt").set_value("train").run()
    assert at.checkbox(key="train_freeze").value is True and not at.checkbox(key="train_freeze").disabled
    # from scratch: nothing to freeze; back to a base: frozen again
    at.selectbox(key="train_base").select_index(len(at.selectbox(key="train_base").options) - 1).run()
    assert at.selectbox(key="train_base").value is None
    assert at.checkbox(key="train_freeze").value is False and at.checkbox(key="train_freeze").disabled
    at.selectbox(key="train_base").set_value(base).run()
    assert at.selectbox(key="train_adapt").value == DEFAULT_METHOD
    at.selectbox(key="train_adapt").set_value("train").run()
    assert at.checkbox(key="train_freeze").value is True
    assert not at.button(key="train_start").disabled
    assert not at.exception and not at.warning


def test_train_says_which_samples_it_leaves_out_and_refuses_contempt_only(store, clip_faces, streamer):
    from ferlib.faces.landmarks import face_crop

    sid = store.create_session("smirks", "indoor", False)
    for k, (bgr, face, _) in enumerate(clip_faces[:6]):
        store.add_sample(sid, "contempt", face.landmarks, crop=face_crop(bgr, face, 112, grey=False),
                         pose=face.pose, frame_index=k)
    at = _app("Train")
    seven = next(i for i, o in enumerate(at.selectbox(key="train_base").options)
                 if o == "shipped: resnet18_attention_fer2013_long")  # a base without contempt
    at.selectbox(key="train_base").select_index(seven).run()
    errors = [e.value for e in at.error]
    assert any("Nothing to train on" in e and "contempt" in e for e in errors), errors
    assert not any("InputError" in e for e in errors)
    assert at.button(key="train_start").disabled
    _seed(store, clip_faces, "me")
    at = _app("Train")
    at.selectbox(key="train_base").select_index(seven).run()
    warnings = [w.value for w in at.warning]
    assert any("6 contempt samples (smirks)" in w and "has no 'contempt' class" in w for w in warnings), warnings
    assert not at.error and not at.button(key="train_start").disabled
    assert any(m.startswith("Training uses: happy") for m in (x.value for x in at.markdown))


def test_a_failed_run_reads_as_a_sentence_once_without_empty_chart(store, clip_faces, streamer):
    _seed(store, clip_faces[:1], "tiny")
    at = _app("Train")
    at.button(key="train_start").click().run()
    job = _wait_job(at.session_state["train_run"])
    assert job.status == "failed" and "Error" not in job.message, job.message
    at.run()
    text = " ".join(e.value for e in at.error) + " ".join(p.proto.text for p in at.get("progress"))
    assert "Error:" not in text and text.count(job.message) == 1, text
    assert not _plotly(at), "a failed run shows no empty loss chart"
    runs = at.dataframe[-1].value
    assert "pid" not in runs.columns and "test accuracy" in runs.columns
    assert runs["status"].iloc[0] == "failed" and runs["error"].iloc[0] == job.message
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", runs["ended"].iloc[0]), runs["ended"].iloc[0]


def test_make_live_shows_its_effect_at_once_and_caveats_few_samples(store, clip_faces, streamer):
    _seed(store, clip_faces, "me")
    at = _app("Train")
    at.button(key="train_start").click().run()
    job = _wait_job(at.session_state["train_run"])
    assert job.status == "done", job.message
    at.run()
    assert any("rough figure" in c.value and f"n={job.test_metrics['n']} test samples" in c.value
               for c in at.caption), [c.value for c in at.caption]
    at.button(key="train_make_live").click().run()
    assert store.live_model()["id"] == job.model_id
    assert any("is live" in m.value for m in at.markdown)
    assert not [b for b in at.button if b.key == "train_make_live"]


def test_studio_offers_only_learnable_emotions_and_counts_per_emotion(store, clip_faces, streamer):
    streamer(playing=False)
    _seed(store, clip_faces, "seeded")  # sad and happy
    at = _app("Studio")
    at.checkbox(key="studio_consent").check().run()
    options = at.selectbox(key="studio_emotion").options
    from ferlib.inference.pipeline import shipped_models
    from webapp.ui import card_of

    # contempt is offered exactly when a model here has the class (the eight-class shipped models do)
    learnable = any("contempt" in card_of(p).get("classes", []) for p in shipped_models())
    assert ("contempt" in options) == learnable and {"happy", "sad", "neutral"} <= set(options)
    assert any("Not offered: contempt" in c.value for c in at.caption) == (not learnable)
    at.text_input(key="studio_session").input("seeded").run()
    at.selectbox(key="studio_emotion").select("happy").run()
    n_happy = sum(e == "happy" for *_, e in clip_faces)
    text = _text(at)
    assert f"Samples recorded: {n_happy} happy in this session" in text, text
    assert f"{len(clip_faces)} samples in all (happy {n_happy}, sad {len(clip_faces) - n_happy})" in text, text
    # an empty session's coverage is white zeros on a 0.. scale, not a solid colour on -0.5..0.5
    at.text_input(key="studio_session").input("new one").run()
    fig = _plotly(at)[0]
    assert all(_array(t["z"]).sum() == 0 for t in fig["data"])
    assert fig["layout"]["coloraxis"]["cmin"] == 0 and fig["layout"]["coloraxis"]["cmax"] >= 1


def test_review_counts_samples_per_emotion(store, clip_faces, streamer):
    streamer(playing=False)
    _seed(store, clip_faces, "both")
    _seed(store, [c for c in clip_faces if c[2] == "sad"][:4], "sad only")
    at = _app("Studio")
    table = at.dataframe[0].value.set_index("session")
    n_happy = sum(e == "happy" for *_, e in clip_faces)
    assert table.at["both", "happy"] == n_happy and table.at["both", "samples"] == len(clip_faces)
    assert table.at["sad only", "sad"] == 4 and table.at["sad only", "happy"] == 0
    assert "pid" not in table.columns and "id" not in table.columns


def test_home_names_the_live_model_in_full_and_links_the_steps(store, clip_faces, streamer):
    from ferlib.inference.pipeline import DEFAULT_MODELS

    at = _app()
    text = _text(at)
    shipped = [s for s in DEFAULT_MODELS if (ROOT / "models" / f"{s}.json").exists()][0]
    assert f"**Live model:** {shipped} (the shipped default)" in text, text
    links = [e for e in at.get("page_link") if e.proto.label.startswith(("1.", "2.", "3.", "4."))]
    assert [e.proto.label for e in links] == ["1. Live", "2. Studio", "3. Train", "4. Evaluate"]
    mid = _make_model(store, "mine")
    store.set_live_model(mid)
    assert "**Live model:** mine v1 (fine-tuned here)" in _text(_app())


def test_live_names_the_model_and_restarts_its_chart_on_a_new_model(store, clip_faces, streamer):
    a = _make_model(store, "first")
    _make_model(store, "second")
    store.set_live_model(a)
    fake = streamer(playing=True)
    at = _app("Live")
    assert at.selectbox(key="live_model").value.label == "first v1 (live)"  # the live model by default
    assert any(i.value.startswith("Starting:") for i in at.info)  # before the first processed frame
    proc = fake.procs["live"]
    for bgr, _, _ in clip_faces[:3]:
        proc.recv(_frame(bgr))
    at.run()
    assert len(at.session_state["live_history"]) == 3
    assert "first v1" in _plotly(at)[0]["layout"]["title"]["text"]
    at.selectbox(key="live_model").select(next(c for c in _choices(store) if c.label == "second v1")).run()
    proc.recv(_frame(clip_faces[0][0]))  # queued under the old model: left out of the new chart
    at.run()
    hist = list(at.session_state["live_history"])
    assert all(h["model_path"] == proc.model_path for h in hist)
    assert "second v1" in _plotly(at)[0]["layout"]["title"]["text"]


def _choices(store):
    from webapp.resources import model_choices

    return model_choices(store)


def test_live_lists_every_face_and_the_chart_follows_the_chosen_one(store, clip_faces, streamer):
    """Two people side by side (the committed clip's frame twice): a face table beside the video, and the
    chart, the prediction and the bars follow the face the user picks (issue 24)."""
    fake = streamer(playing=True)
    at = _app("Live")
    proc = fake.procs["live"]
    bgr = clip_faces[0][0]
    pair = np.ascontiguousarray(np.concatenate([bgr, bgr[:, ::-1]], axis=1))
    for _ in range(3):
        proc.recv(_frame(pair))
    at.run()
    assert "Faces in view: 2" in _text(at)
    table = at.dataframe[0].value
    assert len(table) == 2 and list(table.columns) == ["face", "emotion", "%", "found by", "chart"], table
    assert (table["chart"] == "yes").sum() == 1
    other = int(table.loc[table["chart"] != "yes", "face"].iloc[0])
    at.selectbox(key="live_main_face").set_value(f"face {other}").run()
    assert proc.main_face_id == other
    proc.recv(_frame(pair))
    items = []
    while not proc.results.empty():
        items.append(proc.results.get_nowait())
    assert items and items[-1]["main_id"] == other and sum(r["main"] for r in items[-1]["face_rows"]) == 1
    assert next(r for r in items[-1]["face_rows"] if r["main"])["id"] == other
