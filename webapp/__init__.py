"""Shared Streamlit UI code of the app (cached resources, figures, WebRTC video processors, jobs).

All logic lives in ferlib; this package only connects it to the pages.
"""
