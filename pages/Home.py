"""Overview: what is stored, which model is live, where to go next."""
import streamlit as st

from webapp.resources import get_store, model_choices

st.title("ferlib: facial emotion recognition you can teach")
store = get_store()
sessions, live = store.sessions(), store.live_model()
c = st.columns(4)
c[0].metric("Studio sessions", len(sessions))
c[1].metric("Samples", int(sessions["samples"].sum()) if len(sessions) else 0)
c[2].metric("Models", len(model_choices(store)))
c[3].metric("Live model", f"{live['name']} v{live['version']}" if live else "shipped default")
st.markdown(
    "1. **Live**: see the model's predictions on your webcam.\n"
    "2. **Studio**: record your own faces per emotion (consent first; landmarks-only mode stores no images).\n"
    "3. **Train**: fine-tune a shipped model on your sessions; make the result live.\n"
    "4. **Evaluate**: metrics, confusion matrices and accuracy per head pose, two models side by side.")
st.caption(f"Data folder: `{store.root}` (set FERLIB_DATA to change it). Everything stays on this machine.")
