"""ferlib's Streamlit app: `./run.sh` (or `.venv/bin/python -m streamlit run app.py`).

Local-only: nothing is fetched from the internet; see docs/app.md.
"""
import streamlit as st

st.set_page_config(page_title="ferlib: facial emotion recognition", layout="wide")
page = st.navigation([
    st.Page("pages/Home.py", title="Home", default=True),
    st.Page("pages/Live.py", title="Live"),
    st.Page("pages/Studio.py", title="Studio"),
    st.Page("pages/Train.py", title="Train"),
    st.Page("pages/Evaluate.py", title="Evaluate"),
])
page.run()
