"""Train: fine-tune a shipped model (or train one) on Studio sessions, plus an optional imported dataset,
in a background job."""
import time

import streamlit as st

from ferlib.errors import FerError
from webapp import figures, jobs
from webapp.resources import classifier_types, get_store, model_choices

st.title("Train")
store = get_store()
sessions = store.sessions()
sessions = sessions[sessions["samples"] > 0]

if sessions.empty:
    st.info("Record some samples on the Studio page first (at least two emotions).")
else:
    bases = model_choices(store)
    types = classifier_types()
    left, right = st.columns(2)
    with left:
        labels = {int(r.id): f"{r.name} ({r.samples} samples)" for r in sessions.itertuples()}
        session_ids = st.multiselect("Data: Studio sessions", list(labels), default=list(labels)[:1],
                                     format_func=labels.get, key="train_sessions")
        extra = st.text_input("Extra training data (optional): dataset folder, .zip or .csv", key="train_extra",
                              help="Class-per-folder images, FER2013 zip/csv, CK+ or AffectNet; its images are "
                                   "added to the training split only (validation and test stay on the sessions). "
                                   "Faces are found once and cached.")
        base = st.selectbox("Base model", [None] + bases, key="train_base",
                            format_func=lambda c: "none: train from scratch" if c is None else c.label)
        name = st.text_input("New model name", value="my model", max_chars=64, key="train_name")
    with right:
        model_type = st.selectbox("Model type", types, key="train_type",
                                  index=types.index("landmark_cnn1d") if "landmark_cnn1d" in types else 0, disabled=base is not None,
                                  help="Fine-tuning keeps the base model's type and input settings")
        normalisation = st.selectbox("Normalisation", ["proposed", "minmax", "similarity"], key="train_norm",
                                     disabled=base is not None)
        conditioning = st.checkbox("Subject conditioning (subtract each session's neutral baseline)",
                                   key="train_conditioning", disabled=base is not None)
        freeze = st.checkbox("Freeze backbone (train the head only)", value=base is not None, key="train_freeze")
        c1, c2, c3 = st.columns(3)
        batch = c1.number_input("Batch size", 2, 512, 32, key="train_batch")
        epochs = c2.number_input("Epochs", 1, 500, 20, key="train_epochs")
        patience = c3.number_input("Early-stopping patience (0 = off)", 0, 100, 5, key="train_patience")
    if st.button("Start training", type="primary", key="train_start", disabled=not session_ids):
        try:
            job = jobs.start(store, jobs.TrainSpec(
                name=name, session_ids=[int(i) for i in session_ids], extra_data=extra.strip() or None,
                base_path=base.path if base else None,
                model_type=model_type, normalisation=normalisation, subject_conditioning=conditioning,
                freeze_backbone=freeze, batch_size=int(batch), epochs=int(epochs), patience=int(patience)))
            st.session_state["train_run"] = job.run_id
        except FerError as e:
            st.error(str(e))

run_id = st.session_state.get("train_run")
if run_id is None:  # after a reload: follow the newest job still running in this process
    active = jobs.active_ids()
    run_id = st.session_state["train_run"] = (max(active) if active else None)


@st.fragment(run_every=1.0 if run_id is not None and jobs.get(run_id) and jobs.get(run_id).alive else None)
def progress_panel() -> None:
    job = jobs.get(run_id) if run_id is not None else None
    if job is None:
        return
    st.subheader(f"Run {job.run_id}: {job.spec.name}")
    with st.container(key="train-progress"):
        st.progress(job.progress, text=f"Training status: {job.status}, {job.message}")
    if job.device:
        st.caption(f"Device: {job.device}")
    if job.alive and st.button("Cancel", key="train_cancel"):
        job.cancel.set()
    st.plotly_chart(figures.training_curves(job.history), key="train_curves", width="stretch")
    if job.status == "failed":
        st.error(job.message)
    if job.status == "done" and job.model_id is not None:
        m = store.get_model(job.model_id)
        msg = f"Registered as {m['name']} v{m['version']}."
        if job.test_metrics:
            msg += f" Test accuracy {job.test_metrics['accuracy']:.1%} on {job.test_metrics['n']} samples."
        st.success(msg)
        if m["is_live"]:
            st.markdown("This model is live.")
        elif st.button("Make live", key="train_make_live"):
            store.set_live_model(job.model_id)
            st.toast(f"{m['name']} v{m['version']} is now the live model")
    if not job.alive and st.session_state.get("train_polling"):
        st.session_state["train_polling"] = False
        st.rerun()  # a full rerun stops the polling fragment
    st.session_state["train_polling"] = job.alive


progress_panel()

st.subheader("Runs")
runs = store.runs()
if runs.empty:
    st.caption("No training runs yet.")
else:
    st.dataframe(runs.assign(started=[time.strftime("%H:%M:%S", time.localtime(t)) for t in runs["started"]]),
                 hide_index=True, key="train_runs")
