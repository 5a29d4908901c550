"""Shared Streamlit UI code of the app (cached resources, figures, WebRTC video processors, jobs).

All logic lives in ferlib; this package only connects it to the pages.

Importing it installs one process-wide work-around, on purpose: `ast.parse` serialised on Python
3.11 (see webapp.compat: Streamlit, numpy and torch call it from several app threads at once). Every
page imports webapp before it starts a thread, so this is the one place that runs first in every app
process and in the tests that drive the pages.
"""
from webapp.compat import serialise_ast_parse

serialise_ast_parse()
