"""Work-arounds for bugs in the interpreter and libraries the app runs on, each switched on explicitly.

`serialise_ast_parse()`: CPython 3.11 bug gh-106905 — `ast.parse` running in two threads at once can
raise ``SystemError: AST constructor recursion depth mismatch``. In the app several threads parse
at once: Streamlit's script runner parses every page it runs (its "magic" commands; one runner per
browser tab), while the training job thread (webapp.jobs) and the WebRTC frame threads (webapp.video)
reach `ast.parse` through `np.load` (the .npy header is read with `ast.literal_eval`) and
`inspect.signature` in torch. The calls come from Streamlit, numpy and torch, not from our code, so
the lock has to sit on `ast.parse` itself, for the whole process: a narrower fix cannot reach them.
It is installed by `webapp/__init__.py`, which every page imports before it starts a thread; ferlib
(the library, the CLI) never installs it. Python 3.12 fixed the bug, so there it does nothing.
"""
from __future__ import annotations

import ast
import sys
import threading


def serialise_ast_parse() -> bool:
    """Make `ast.parse` take a process-wide lock on Python < 3.12 (idempotent). True when it is in place."""
    if sys.version_info >= (3, 12):
        return False
    if getattr(ast.parse, "_ferlib_serialised", False):
        return True
    parse, lock = ast.parse, threading.RLock()

    def serialised_parse(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    serialised_parse.__wrapped__ = parse
    serialised_parse.__doc__ = parse.__doc__
    serialised_parse._ferlib_serialised = True
    ast.parse = serialised_parse
    return True
