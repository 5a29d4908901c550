"""Shared Streamlit UI code of the app (cached resources, figures, WebRTC video processors, jobs).

All logic lives in ferlib; this package only connects it to the pages.
"""
import ast
import sys
import threading

if sys.version_info < (3, 12) and not getattr(ast.parse, "_ferlib_serialised", False):
    # CPython 3.11 bug gh-106905: ast.parse in two threads at once can raise "SystemError: AST
    # constructor recursion depth mismatch". Streamlit parses each page with ast.parse while the
    # training and WebRTC threads call it too (np.load's header, inspect.signature in torch), so
    # serialise it.
    _parse, _lock = ast.parse, threading.RLock()

    def _serialised_parse(*args, **kwargs):
        with _lock:
            return _parse(*args, **kwargs)

    _serialised_parse._ferlib_serialised = True
    ast.parse = _serialised_parse
