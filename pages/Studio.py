"""Studio: record your own labelled faces (consent first), see the coverage, review and export."""
import time

import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from ferlib.classes import CLASSES
from ferlib.errors import FerError
from ferlib.store import CONDITIONS
from ferlib.training.personal import SAMPLES_PER_VIEW, samples_needed
from webapp import figures, ui, video
from webapp.resources import drain_results, get_store, make_extractor, model_choices, rtc_configuration

st.title("Studio")
store = get_store()

CONSENT = (
    "**Consent.** The Studio records images of your face (or, in landmarks-only mode, only the 478 "
    "face-mesh points) with the emotion you choose, and stores them in the data folder on this machine "
    f"(`{store.root}`). Nothing is sent anywhere. Record only yourself, or people who agreed to it. You "
    "can delete any sample or session at any time below, which removes its files.")
st.markdown(CONSENT)
consent = st.checkbox("I understand and agree to record my face", key="studio_consent")

record_tab, review_tab = st.tabs(["Record", "Review"])


def _session_id(name: str, condition: str, landmarks_only: bool) -> int | None:
    """The id of session `name`, created on first use; None (with an error shown) for a bad name."""
    try:
        sid = store.session_by_name(name)
        return sid if sid is not None else store.create_session(name, condition, landmarks_only)
    except FerError as e:
        st.error(str(e))
        return None


with record_tab:
    if not consent:
        st.info("Tick the consent box above to start the camera.")
    else:
        left, right = st.columns([2, 3])
        with left:
            name = st.text_input("Session name", value="my session", key="studio_session", max_chars=64)
            emotions = ui.learnable_classes([c.path for c in model_choices(store)])
            emotion = st.selectbox("Emotion", emotions, index=emotions.index("neutral") if "neutral" in emotions else 0,
                                   key="studio_emotion",
                                   help="The emotions a model here can learn: training keeps a base model's "
                                        "classes, and the shipped models know these")
            unlearnable = [c for c in CLASSES if c not in emotions]
            if unlearnable:
                st.caption(f"Not offered: {', '.join(unlearnable)} (no model here has the class, so its samples "
                           "could never be learned).")
            condition = st.radio("Condition", CONDITIONS, horizontal=True, key="studio_condition")
            landmarks_only = st.toggle("Landmarks only (store no images)", key="studio_landmarks_only",
                                       help="Applies when the session is created")
            rate = st.slider("Recording rate (samples per second)", 0.5, 10.0, 2.0, 0.5, key="studio_rate")
        try:
            rtc = rtc_configuration()
        except FerError as e:
            st.error(str(e))
            st.stop()
        with right:
            ctx = webrtc_streamer(
                key="studio", mode=WebRtcMode.SENDRECV, rtc_configuration=rtc,
                media_stream_constraints={"video": True, "audio": False}, async_processing=True,
                video_processor_factory=lambda: video.StudioRecorder(store, make_extractor, None, emotion,
                                                                     condition, rate))
        proc = ctx.video_processor
        if proc is None:  # no camera: never resume recording silently when it starts again
            st.session_state["studio_recording"] = False
        with left:
            recording = st.toggle("Record continuously", key="studio_recording", disabled=proc is None)
            capture = st.button("Capture sample", key="studio_capture", disabled=proc is None)
        sid = _session_id(name, condition, landmarks_only) if (recording or capture) else None
        if proc is not None:  # settings reach the worker thread through plain attributes
            proc.session_id, proc.emotion, proc.condition, proc.rate_hz = sid, emotion, condition, rate
            proc.recording = bool(recording and sid is not None)
            if capture and sid is not None:
                proc.capture_one()
        playing = bool(ctx.state.playing)

        @st.fragment(run_every=1.0 if playing else None)
        def studio_panel() -> None:
            p = ctx.video_processor
            if p is not None:
                drain_results(p, "studio_error")
            known = store.session_by_name(name)
            per = (store.samples([known]).groupby("emotion").size() if known is not None
                   else pd.Series(dtype=int))
            n, k = int(per.sum()), int(per.get(emotion, 0))
            with st.container(key="studio-stats"):
                rest = ", ".join(f"{e} {c}" for e, c in per.items())
                st.markdown(f"Samples recorded: {k} {emotion} in this session  \n"
                            f"Session: {name}, {n} samples in all" + (f" ({rest})" if rest else "") + "  \n"
                            f"Recording: {'yes, ' + emotion if p is not None and p.recording else 'no'}")
            if st.session_state.get("studio_error"):
                st.warning(st.session_state["studio_error"])
            scope = st.radio("Coverage of", ["this session", "all sessions"], horizontal=True, key="studio_cov")
            ids = None if scope == "all sessions" else ([known] if known is not None else [])
            st.plotly_chart(figures.coverage_heatmap(store.coverage(ids)), key="studio_coverage",
                            width="stretch")
            guide = samples_needed(store.samples(ids), emotions)
            more = int(guide["needed"].sum())
            with st.container(key="studio-guide"):
                st.markdown(f"**For a personal model** ({SAMPLES_PER_VIEW} samples per emotion in each view): "
                            + (f"{more} more samples to record." if more else "every emotion and view is covered."))
                st.dataframe(guide, hide_index=True, key="studio_needed", width="stretch",
                             column_config={"needed": st.column_config.NumberColumn(
                                 "still needed", help="samples to record for this emotion: turn your head "
                                                      "to the views with fewer than "
                                                      f"{SAMPLES_PER_VIEW}")})

        studio_panel()

with review_tab:
    sessions = store.sessions()
    if sessions.empty:
        st.info("No sessions yet.")
    else:
        st.dataframe(ui.sessions_table(sessions, store.samples()), hide_index=True, key="studio_sessions_table",
                     width="stretch")
        # names only: the counts live in the table above, which every rerun rebuilds
        labels = {int(r.id): r.name for r in sessions.itertuples()}
        chosen = st.selectbox("Session", list(labels), format_func=labels.get, key="review_session")
        samples = store.samples([chosen])
        per_page = 12
        pages = max(1, -(-len(samples) // per_page))
        page = st.number_input("Page", 1, pages, 1, key="review_page") if pages > 1 else 1
        cols = st.columns(6)
        for k, r in enumerate(samples.iloc[(page - 1) * per_page: page * per_page].itertuples()):
            with cols[k % 6]:
                crop = store.load_crop(r.id)
                if crop is not None:
                    st.image(crop[:, :, ::-1], width=96)
                else:
                    st.caption("landmarks only")
                st.caption(f"#{r.id} {r.emotion}, yaw {r.yaw:+.0f}°" if r.yaw == r.yaw else f"#{r.id} {r.emotion}")
                if st.button("Delete", key=f"del_sample_{r.id}"):
                    store.delete_sample(r.id)
                    st.rerun()
        c1, c2 = st.columns(2)
        with c1:
            sure = st.checkbox("Yes, delete this whole session and its files", key="review_confirm")
            if st.button("Delete session", key="review_delete_session", disabled=not sure):
                store.delete_session(chosen)
                st.session_state.pop("review_session", None)
                st.rerun()
        with c2:
            export_ids = st.multiselect("Sessions to export", list(labels), default=[chosen],
                                        format_func=labels.get, key="export_sessions")
            if st.button("Build dataset zip", key="export_build", disabled=not export_ids):
                try:
                    path = store.export_zip(export_ids, store.root / "exports" / f"studio-{int(time.time())}.zip")
                    st.session_state["export_path"] = str(path)
                except FerError as e:
                    st.error(str(e))
            if st.session_state.get("export_path"):
                with open(st.session_state["export_path"], "rb") as f:
                    st.download_button("Download zip", f.read(), file_name="ferlib-studio.zip",
                                       mime="application/zip", key="export_download")
