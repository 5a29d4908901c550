"""Overview: what is stored, which model is live, where to go next."""
import streamlit as st

from webapp.resources import get_store, model_choices

st.title("ferlib: facial emotion recognition you can teach")
store = get_store()
sessions, live = store.sessions(), store.live_model()
choices = model_choices(store)
c = st.columns(3)
c[0].metric("Studio sessions", len(sessions))
c[1].metric("Samples", int(sessions["samples"].sum()) if len(sessions) else 0)
c[2].metric("Models", len(choices))
# the live model's whole name as text: a metric tile cuts long names off
if live:
    st.markdown(f"**Live model:** {live['name']} v{live['version']} (fine-tuned here)")
else:
    default = next((ch for ch in choices if ch.store_id is None), None)
    st.markdown("**Live model:** " + (f"{default.label.removeprefix('shipped: ')} (the shipped default)"
                                      if default else "none yet"))
st.subheader("From your webcam to your own model")
STEPS = [("pages/Live.py", "1. Live", "see the model's predictions on your webcam."),
         ("pages/Studio.py", "2. Studio", "record your own faces per emotion (consent first; landmarks-only mode "
                                          "stores no images)."),
         ("pages/Train.py", "3. Train", "fine-tune the shipped model on your sessions; make the result live."),
         ("pages/Evaluate.py", "4. Evaluate", "metrics, confusion matrices and accuracy per head pose, two models "
                                              "side by side.")]
for path, label, what in STEPS:
    link, text = st.columns([1, 5])
    link.page_link(path, label=label)
    text.markdown(what)
st.caption(f"Data folder: `{store.root}` (set FERLIB_DATA to change it). Everything stays on this machine.")
