"""Train: fine-tune a shipped model (or train one) on Studio sessions, plus an optional imported dataset,
in a background job."""
import streamlit as st

from ferlib.errors import FerError
from ferlib.training.personal import DEFAULT_METHOD
from webapp import figures, jobs, ui
from webapp.resources import classifier_types, get_store, model_choices, model_input_kind

ADAPT_LABELS = {
    "head": "Personal: refit the last layer on your samples (recommended; seconds)",
    "prototype": "Personal: add your own per-emotion prototypes (fastest)",
    "full": "Personal: fine-tune every weight for 15 epochs (slow on a CPU)",
    "train": "Classic fine-tune: epochs, validation split, early stopping (hundreds of samples)",
}

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
        # every session with samples: a user who just presses Start trains on all they recorded
        kept = st.session_state.get("train_sessions")
        st.session_state["train_sessions"] = list(labels) if kept is None else [i for i in kept if i in labels]
        session_ids = st.multiselect("Data: Studio sessions", list(labels),
                                     format_func=labels.get, key="train_sessions")
        extra = st.text_input("Extra training data (optional): dataset folder, .zip or .csv", key="train_extra",
                              help="Class-per-folder images, FER2013 zip/csv, CK+ or AffectNet; its images are "
                                   "added to the training split only (validation and test stay on the sessions). "
                                   "Faces are found once and cached.")
        options = bases + [None]
        base = st.selectbox("Base model", options, index=ui.default_model_index(bases) if bases else 0,
                            key="train_base",
                            format_func=lambda c: "none: train a new model from scratch" if c is None else c.label,
                            help="Fine-tuning starts from a trained model (the shipped default is preselected); "
                                 "from scratch needs far more samples for the same accuracy")
        name = st.text_input("New model name", value="my model", max_chars=64, key="train_name")
    with right:
        if base is not None:  # fine-tuning keeps the base model's type: show that one, not a stale choice
            base_type = ui.card_of(base.path).get("model", {}).get("name", "")
            st.selectbox("Model type", [base_type or "the base model's"], key="train_type_of_base", disabled=True,
                         help="Fine-tuning keeps the base model's type and input settings")
            model_type = st.session_state.get("train_type", "landmark_cnn1d")
        else:
            model_type = st.selectbox("Model type", types, key="train_type",
                                      index=types.index("landmark_cnn1d") if "landmark_cnn1d" in types else 0)
        normalisation = st.selectbox("Normalisation", ["proposed", "minmax", "similarity"], key="train_norm",
                                     disabled=base is not None)
        conditioning = st.checkbox("Subject conditioning (subtract each session's neutral baseline)",
                                   key="train_conditioning", disabled=base is not None)
        adapt = "train"
        if base is not None:
            adapt = st.selectbox("How it learns your face", list(ADAPT_LABELS), key="train_adapt",
                                 index=list(ADAPT_LABELS).index(DEFAULT_METHOD), format_func=ADAPT_LABELS.get,
                                 help="Personal adaptation uses every sample on a fixed schedule, made for a few "
                                      "samples per emotion (docs/results.md 'Personal models': 26 people). "
                                      "The classic fine-tune holds out a validation split and stops early: "
                                      "for hundreds of samples per emotion.")
        base_key = base.path if base is not None else ""
        if "train_freeze" not in st.session_state or st.session_state.get("train_base_seen") != base_key:
            # a base model: train its head only by default (fast, and safe on a few dozen samples)
            st.session_state["train_freeze"] = base is not None
        st.session_state["train_base_seen"] = base_key
        freeze, batch, epochs, patience = False, 32, 20, 5
        if adapt == "train":  # the classic fine-tune's (and a new model's) settings
            freeze = st.checkbox("Freeze backbone (train the head only)", key="train_freeze",
                                 disabled=base is None,
                                 help="On by default with a base model: only its last layer learns your samples, "
                                      "which is fast and keeps what it learnt from thousands of faces. Untick to "
                                      "fine-tune every weight (slower; can overfit a few dozen samples). A model "
                                      "trained from scratch trains every weight.")
            c1, c2, c3 = st.columns(3)
            batch = c1.number_input("Batch size", 2, 512, 32, key="train_batch")
            epochs = c2.number_input("Epochs", 1, 500, 20, key="train_epochs")
            patience = c3.number_input("Early-stopping patience (0 = off)", 0, 100, 5, key="train_patience")

    # what training will use, and what it leaves out and why
    if base is not None:
        card = ui.card_of(base.path)
        classes, needs_crop = card.get("classes", []), card.get("input", {}).get("kind") in ("image", "hybrid")
        who = base.label.removeprefix("shipped: ")
    else:
        from ferlib.classes import FER7

        classes, who = list(FER7), f"a new {model_type}"
        needs_crop = model_input_kind(model_type) in ("image", "hybrid")
    chosen = store.samples(session_ids) if session_ids else store.samples([])
    usable, dropped = ui.training_plan(chosen, classes, needs_crop, who)
    with st.container(key="train-plan"):
        if session_ids and usable:
            st.markdown("Training uses: " + ", ".join(f"{c} {n}" for c, n in usable.items())
                        + f" samples ({sum(usable.values())} in all).")
        for line in dropped:
            st.warning("Not used: " + line + ".")
        can_train = bool(session_ids) and bool(usable)
        if session_ids and not usable:
            held = ", ".join(f"{e} {n}" for e, n in chosen.groupby("emotion").size().items())
            st.error(f"Nothing to train on: the selected sessions hold {held} samples, and none of them can "
                     f"train {who} (it learns {', '.join(classes)}"
                     + (", from face images" if needs_crop else "") + "). Record one of those emotions in the "
                     "Studio" + (" with images" if needs_crop else "") + ".")
        elif len(usable) == 1:
            st.warning(f"Only one emotion ({next(iter(usable))}) to learn: the model will lean towards it "
                       "for every face. Record a second emotion in the Studio for a useful model.")
    if st.button("Start training", type="primary", key="train_start", disabled=not can_train):
        try:
            job = jobs.start(store, jobs.TrainSpec(
                name=name, session_ids=[int(i) for i in session_ids], extra_data=extra.strip() or None,
                base_path=base.path if base else None,
                model_type=model_type, normalisation=normalisation, subject_conditioning=conditioning,
                freeze_backbone=bool(freeze and base is not None), batch_size=int(batch), epochs=int(epochs),
                patience=int(patience), adapt=adapt))
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
        if job.status == "failed" or not job.message:
            text = f"Training status: {job.status}"  # a failure's reason shows once, below
        elif job.message.startswith(job.status):
            text = f"Training status: {job.message}"
        else:
            text = f"Training status: {job.status}, {job.message}"
        st.progress(job.fraction, text=text)  # 1.0 once done
    if job.device:
        st.caption(f"Device: {job.device}")
    if job.alive and st.button("Cancel", key="train_cancel"):
        job.cancel.set()
    if job.history:  # no empty axes before the first epoch (or for a run that failed before it)
        st.plotly_chart(figures.training_curves(job.history), key="train_curves", width="stretch")
        note = ui.few_samples_note(job.counts.get("val", 0), "validation samples") if job.counts else None
        if note:
            st.caption(f"Validation accuracy: {note}.")
    elif job.alive and job.spec.base_path and job.spec.adapt != "train":
        st.caption("Personal adaptation runs in one step: no epochs to plot.")
    elif job.alive:
        st.caption("The loss and accuracy curves appear after the first epoch.")
    if job.status == "failed":
        st.error(f"Training failed: {job.message}")
    if job.status == "done" and job.model_id is not None:
        m = store.get_model(job.model_id)
        msg = f"Registered as {m['name']} v{m['version']}."
        if job.test_metrics:
            msg += f" Test accuracy {job.test_metrics['accuracy']:.1%} on {job.test_metrics['n']} samples."
        st.success(msg)
        note = ui.few_samples_note(job.test_metrics["n"]) if job.test_metrics else None
        if note:
            st.caption(f"Test accuracy: {note}.")
        if m["is_live"]:
            st.markdown(f"**{m['name']} v{m['version']} is live**: the Live page uses it now.")
        elif st.button("Make live", key="train_make_live", type="primary"):
            store.set_live_model(job.model_id)
            st.toast(f"{m['name']} v{m['version']} is now the live model")
            st.rerun()  # show the new state at once (the button goes, "is live" appears)
    if not job.alive and st.session_state.get("train_polling"):
        st.session_state["train_polling"] = False
        st.rerun()  # a full rerun stops the polling fragment
    st.session_state["train_polling"] = job.alive


progress_panel()

st.subheader("Runs")
runs = ui.runs_table(store)
if runs.empty:
    st.caption("No training runs yet.")
else:
    st.dataframe(runs, hide_index=True, key="train_runs", width="stretch",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="percent"),
                                "best val accuracy": st.column_config.NumberColumn(format="percent")})
