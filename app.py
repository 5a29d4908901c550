"""ferlib's Streamlit app: `./run.sh` (or `.venv/bin/python -m streamlit run app.py`).

Local-only: nothing is fetched from the internet; see docs/app.md.
"""
import streamlit as st

st.set_page_config(page_title="ferlib: facial emotion recognition", layout="wide")
PAGES = [("pages/Home.py", "Home"), ("pages/Live.py", "Live"), ("pages/Studio.py", "Studio"),
         ("pages/Train.py", "Train"), ("pages/Evaluate.py", "Evaluate")]
pages = [st.Page(path, title=title, default=(title == "Home")) for path, title in PAGES]
# Streamlit 1.60 shows the raw pages/ folder listing instead of this navigation when a fresh server is
# first opened at a page URL; drawing the links ourselves (client.showSidebarNavigation = false in
# .streamlit/config.toml) keeps the sidebar right in every case.
page = st.navigation(pages, position="hidden")
with st.sidebar:
    for p, (_, title) in zip(pages, PAGES):
        st.page_link(p, label=title)
page.run()
