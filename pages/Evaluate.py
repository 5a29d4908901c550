"""Evaluate: metrics, confusion matrices, per-class report and per-pose accuracy of one or two models."""
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ferlib.errors import FerError
from ferlib.inference.checkpoint import card_spec, card_tta_flip
from ferlib.inference.pipeline import turned_expert_of
from ferlib.training.evaluate import confusion_figure, evaluate, evaluate_prepared
from webapp import figures, ui
from webapp.datasets import folder_prepared, folder_table, split_sets, studio_table, tensor_set
from webapp.resources import get_store, load_model, require_models

st.title("Evaluate")
store = get_store()
choices = require_models(store)

session_ids, folder, split, limit = [], "", "all", 300
left, right = st.columns(2)
with left:
    # two plain selects: a model's whole name always shows (multiselect chips cut them off)
    first = st.selectbox("Model", choices, format_func=lambda c: c.label, key="eval_model")
    others = [None] + [c for c in choices if c != first]
    default_other = choices[ui.default_model_index(choices)]
    second = st.selectbox("Compare with (optional)", others, key="eval_model_2",
                          index=others.index(default_other) if default_other in others else 0,
                          format_func=lambda c: "nothing: this model alone" if c is None else c.label,
                          help="A second model evaluated on the same samples, side by side")
    picked = [c for c in (first, second) if c is not None]
with right:
    source = st.radio("Data", ["Studio sessions", "Folder or zip dataset"], horizontal=True, key="eval_source")
    if source == "Studio sessions":
        sessions = store.sessions()
        sessions = sessions[sessions["samples"] > 0]
        labels = {int(r.id): f"{r.name} ({r.samples} samples)" for r in sessions.itertuples()}
        kept = st.session_state.get("eval_sessions")
        st.session_state["eval_sessions"] = list(labels) if kept is None else [i for i in kept if i in labels]
        session_ids = st.multiselect("Sessions", list(labels), format_func=labels.get, key="eval_sessions")
        split = st.radio("Samples", ["test split", "all"], horizontal=True, key="eval_split",
                         help="The chunked split per emotion and session: fine-tuned models never saw the test part")
    else:
        folder = st.text_input("Dataset folder or .zip (class-per-folder layout)", key="eval_folder")
        limit = st.number_input("At most this many images (a seeded sample)", 10, 20000, 300, key="eval_limit")


def _studio_inputs(spec, classes) -> dict:
    df = studio_table(store, session_ids)
    if split == "test split":
        sets = split_sets(df, spec, classes)
        if "test" not in sets:
            raise FerError("no test samples: record more per emotion, or evaluate on all samples")
        ts, df = sets["test"]
    else:
        ts, df = tensor_set(df, spec, classes)
    return {"data": ts, "poses": df[["yaw", "pitch", "roll"]].to_numpy(float)}


def _run(choice) -> dict:
    """The model's metrics, each face read as Live reads it: flip averaging as its card says, and for a
    folder's large images the crop Live cuts (the detector box; turned faces frontalised for the
    turned-face expert a card names). Studio samples are read from their stored crops."""
    model, card = load_model(choice.path)
    spec, classes, tta = card_spec(card), list(card["classes"]), card_tta_flip(card)
    expert_path = turned_expert_of(card)
    if source == "Studio sessions":
        metrics = evaluate(model, classes=classes, tta_flip=tta, **_studio_inputs(spec, classes))
        if expert_path is not None:  # Live would hand turned faces to it
            metrics["turned_expert"] = {"model": Path(str(expert_path)).stem, "faces": None}
        return metrics
    prepared = folder_prepared(folder_table(folder, int(limit)), spec, classes, frontal=expert_path is not None)
    expert = None if expert_path is None else load_model(str(expert_path))[0]
    return evaluate_prepared(model, prepared, tta_flip=tta, expert=expert)


ready = bool(picked) and (bool(session_ids) if source == "Studio sessions" else bool(folder.strip()))
if st.button("Evaluate", type="primary", key="eval_run", disabled=not ready):
    results = {}
    with st.spinner("Evaluating"):
        for c in picked:
            try:
                results[c.label] = _run(c)
            except FerError as e:
                st.error(f"{c.label}: {e}")
    st.session_state["eval_results"] = results
    st.session_state["eval_what"] = ("test samples" if source == "Studio sessions" and split == "test split"
                                     else "samples")

results = st.session_state.get("eval_results") or {}
if results:
    st.subheader("Metrics")
    table = pd.DataFrame([{"model": k, "samples": m["n"], "detection rate": m["detection_rate"],
                           "accuracy": m["accuracy"], "macro F1": m["macro_f1"],
                           "accuracy (misses wrong)": m["accuracy_all"]} for k, m in results.items()])
    experts = {k: m["turned_expert"] for k, m in results.items() if m.get("turned_expert")}
    if experts:
        table["turned faces read by the expert"] = [
            "" if k not in experts else "not here" if experts[k]["faces"] is None else str(experts[k]["faces"])
            for k in results]
    st.dataframe(table, hide_index=True, key="eval_table", width="stretch")
    if experts:
        st.caption("In Live and `ferlib predict` this model hands a face turned 20° or more to its turned-face "
                   "expert, frontalised. A folder's images are read the same way here. Studio samples are read "
                   "from their stored crops, plain, by the model alone (\"not here\"): its figures on turned "
                   "faces can differ from what Live shows.")
    n = min(int(m["n"]) for m in results.values())
    note = ui.few_samples_note(n, st.session_state.get("eval_what", "samples"))
    if note:
        st.warning(f"{note}.")
    pose_rows = []
    cols = st.columns(len(results))
    for col, (label, m) in zip(cols, results.items()):
        with col:
            st.markdown(f"**{label}**")
            counts = confusion_figure(m, normalised=False)
            counts.update_layout(title=f"Counts: samples per true and predicted class (accuracy {m['accuracy']:.1%}, "
                                       f"n={m['n']})")
            share = confusion_figure(m, normalised=True)
            share.update_layout(title="Row-normalised: share of each true class")
            st.plotly_chart(counts, key=f"cm_{label}", width="stretch")
            st.plotly_chart(share, key=f"cmn_{label}", width="stretch")
            st.dataframe(pd.DataFrame(m["per_class"]).T.rename_axis("class"), key=f"report_{label}")
        for axis, rows in (m.get("pose_accuracy") or {}).items():
            pose_rows += [{"model": label, "pose_bin": f"{axis} {r['bin']}",
                           "accuracy": np.nan if r["accuracy"] is None else r["accuracy"], "n": r["n"]}
                          for r in rows]
    if pose_rows:
        st.plotly_chart(figures.pose_accuracy_bar(pd.DataFrame(pose_rows)), key="eval_pose",
                        width="stretch")
