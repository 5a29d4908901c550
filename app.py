"""ferlib's Streamlit app: `./run.sh` (or `.venv/bin/python -m streamlit run app.py`).

Local-only: nothing is fetched from the internet; see docs/app.md.
"""
import streamlit as st

st.set_page_config(page_title="ferlib: facial emotion recognition", layout="wide")
PAGES = [
    st.Page("pages/Home.py", title="Home", default=True),
    st.Page("pages/Live.py", title="Live"),
    st.Page("pages/Studio.py", title="Studio"),
    st.Page("pages/Train.py", title="Train"),
    st.Page("pages/Evaluate.py", title="Evaluate"),
]
# Streamlit 1.60 shows the raw pages/ folder listing instead of this navigation when a fresh server is
# first opened at a page URL; drawing the links ourselves (client.showSidebarNavigation = false in
# .streamlit/config.toml) keeps the sidebar right in every case.
page = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for p in PAGES:
        st.page_link(p, label=p.title)
page.run()
