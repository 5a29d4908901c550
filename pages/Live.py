"""Live: webcam -> ferlib pipeline -> annotated video, probability and performance charts."""
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from ferlib.errors import FerError
from ferlib.inference.pipeline import DEFAULT_SMOOTHING, shipped_keypoint_model
from webapp import figures, ui, video
from webapp.resources import SMOOTHING, drain_results, get_store, make_pipeline, require_models, rtc_configuration

st.title("Live")
store = get_store()
choices = require_models(store)
try:
    rtc = rtc_configuration()
except FerError as e:
    st.error(str(e))
    st.stop()

live = next((i for i, c in enumerate(choices) if c.is_live), None)
top = st.columns([3, 2])
with top[0]:
    choice = st.selectbox("Model", choices, format_func=lambda c: c.label, key="live_model",
                          index=live if live is not None else ui.default_model_index(choices),
                          help="The live model (Train page: Make live) or, without one, the shipped default")
with top[1]:
    smoothing = st.radio("Smoothing", list(SMOOTHING), key="live_smoothing", horizontal=True,
                         index=list(SMOOTHING.values()).index(DEFAULT_SMOOTHING),
                         help="EMA of the probabilities (the default: steadier labels that still follow a "
                              "change within half a second), or the majority label over a window of frames")
opts = st.columns(4)
with opts[0]:
    mesh = st.toggle("Face-mesh overlay", key="live_mesh")
with opts[1]:
    show_pose = st.toggle("Head-pose readout", value=True, key="live_pose")
with opts[2]:
    kp_path = shipped_keypoint_model()
    retry = kp_path is not None and st.toggle(
        "Retry missed faces (keypoint model)", key="live_keypoints",
        help="When face mesh misses a face BlazeFace found, re-frame it on the keypoint regressor's "
             "eye and mouth points and try again (about +2 points of detection on FER2013; costs up to "
             "three more face-mesh passes on such frames)")
    keypoint_model = str(kp_path) if retry else None

view, charts = st.columns([3, 2])
with view:
    ctx = webrtc_streamer(
        key="live", mode=WebRtcMode.SENDRECV, rtc_configuration=rtc,
        media_stream_constraints={"video": True, "audio": False}, async_processing=True,
        video_processor_factory=lambda: video.LiveProcessor(make_pipeline, choice.path, SMOOTHING[smoothing], mesh,
                                                            keypoint_model))
    proc = ctx.video_processor
    if proc is not None:  # settings reach the worker thread through plain attributes
        proc.model_path, proc.smoothing, proc.mesh = choice.path, SMOOTHING[smoothing], mesh
        proc.keypoint_model = keypoint_model

with opts[3]:
    if st.button("Calibrate neutral", key="live_calibrate", disabled=proc is None,
                 help="Look neutral at the camera: averages your landmarks over a few frames as the "
                      "baseline that models trained with subject conditioning subtract"):
        proc.request_calibration()
        st.toast("Calibrating: keep a neutral face for a second")
    if st.button("Clear calibration", key="live_clear_calibration", disabled=proc is None):
        proc.clear_calibration()

history: deque = st.session_state.setdefault("live_history", deque(maxlen=1200))
if st.session_state.get("live_history_model") != choice.path:  # a new model: its chart starts afresh
    history.clear()
    st.session_state["live_history_model"] = choice.path
playing = bool(ctx.state.playing)


@st.fragment(run_every=1.0 if playing else None)
def live_panel() -> None:
    p = ctx.video_processor
    if p is not None:
        # frames the previous model processed (still queued) stay out of this model's chart
        history.extend(h for h in drain_results(p, "live_error") if h.get("model_path", choice.path) == choice.path)
        st.session_state["live_frames"] = p.frames
    frames = st.session_state.get("live_frames", 0)
    recent = [h for h in history if history and h["t"] >= history[-1]["t"] - 2.0]
    span = recent[-1]["t"] - recent[0]["t"] if len(recent) > 1 else 0.0
    fps = (len(recent) - 1) / span if span > 0 else 0.0
    lat = [h["latency_ms"] for h in list(history)[-100:]]
    p95 = float(np.percentile(lat, 95)) if lat else 0.0
    with st.container(key="live-stats"):
        st.markdown(f"Frames processed: {frames}  \nFPS: {fps:.1f}  \nLatency p95: {p95:.0f} ms")
        last = history[-1] if history else None
        if last and last["label"]:
            st.markdown(f"Prediction: **{last['label']}** ({max(last['probs']):.0%})")
            if last.get("path"):
                # the checkpoint's stem ("model" for models trained here) -> the name the select shows
                shipped = last["model"] == Path(choice.path).stem
                used = choice.label.removeprefix("shipped: ") if shipped else last["model"]
                st.markdown(f"Path: {last['path']} ({used})", help=(
                    "mesh: the face's 478 face-mesh landmarks reached the model (or framed its crop: the "
                    "default meshes the faces of frames with at most 2 faces and frontalises a turned one "
                    "for its turned-face expert); box: the detector's box alone (a bigger group's faces, "
                    "and a landmark model's fallback image model reads faces face mesh cannot read)"))
            if show_pose and last["pose"]:
                yaw, pitch, roll = last["pose"]
                st.markdown(f"Head pose: yaw {yaw:+.0f}°, pitch {pitch:+.0f}°, roll {roll:+.0f}°")
            elif show_pose:
                st.caption("Head pose needs face mesh, which this model skips here (image models run it only "
                           "to frontalise turned faces, when their card names a turned-face expert); turn on "
                           "the face-mesh overlay to see it.")
        elif last:
            st.markdown("Prediction: no face")
        elif playing:
            st.info("Starting: loading the model and the face detector; the first frame takes a few seconds.")
        if last and len(last.get("face_rows") or []) > 1:
            rows = last["face_rows"]
            st.markdown(f"Faces in view: {len(rows)}")
            st.dataframe(pd.DataFrame([{"face": r["id"], "emotion": r["emotion"], "%": round(100 * r["p"]),
                                        "found by": r["path"], "chart": "yes" if r["main"] else ""} for r in rows]),
                         hide_index=True, key="live_faces")
            ids = [r["id"] for r in rows]
            pick = st.selectbox("Chart and bars follow", ["the largest face", *(f"face {i}" for i in ids)],
                                key="live_main_face")
            if p is not None:
                p.main_face_id = None if pick == "the largest face" else int(pick.split()[-1])
        if p is not None and p.calibrated:
            st.caption("Neutral baseline calibrated.")
    if st.session_state.get("live_error"):
        st.warning(st.session_state["live_error"])
    quiet = {"displayModeBar": False}  # the toolbar would cover the titles; these charts redraw every second
    st.plotly_chart(figures.probability_timeline(list(history), model=choice.label.removeprefix("shipped: ")),
                    key="live_probs", width="stretch", config=quiet)
    st.plotly_chart(figures.performance_chart(list(history)), key="live_perf", width="stretch", config=quiet)


with charts:
    if not playing and not history:
        st.info("Press START to open your webcam. Frames stay on this machine.")
    live_panel()
