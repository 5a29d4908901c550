"""Loading a model for Live takes a straight path: no ferlib module is called back by one it called.

The path a user's Live page takes (`webapp.resources.make_pipeline` -> `Pipeline(model)`) is traced
with `sys.setprofile`: for every call into a ferlib module, the chain of ferlib modules on the stack
(consecutive repeats merged) must not hold any module twice (A -> B -> A: B calls back into A).
Frames of ferlib.models are left out of the chain: a network's forward runs inside torch while export
traces it, and the pieces export puts into the traced copy (pooling as matrix products, a size hook)
run inside that forward as layers do; that is torch composing modules, not ferlib's logic going back.
"""
from __future__ import annotations

import sys

from ferlib.inference.pipeline import Pipeline, default_model_path


def _ferlib_chain(frame) -> list[str]:
    chain: list[str] = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("ferlib") and not name.startswith("ferlib.models") and (not chain or chain[-1] != name):
            chain.append(name)
        frame = frame.f_back
    return chain[::-1]


def callbacks_while(fn) -> tuple[list[list[str]], set[str], dict[str, set[str]]]:
    """(the chains with a module twice, every ferlib module entered, module -> the modules that
    entered it) while fn() runs."""
    bad: dict[tuple[str, ...], list[str]] = {}
    seen: set[str] = set()
    callers: dict[str, set[str]] = {}

    def prof(frame, event, arg):
        name = frame.f_globals.get("__name__", "")
        if event == "call" and name.startswith("ferlib") and not name.startswith("ferlib.models"):
            chain = _ferlib_chain(frame)
            seen.add(chain[-1])
            if len(chain) > 1:
                callers.setdefault(chain[-1], set()).add(chain[-2])
            if len(set(chain)) < len(chain):
                bad.setdefault(tuple(chain), chain)

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return list(bad.values()), seen, callers


def _module(name: str, source: str) -> dict:
    glob: dict = {"__name__": name}
    exec(compile(source, name, "exec"), glob)
    return glob


def test_the_checker_sees_a_callback():
    a = _module("ferlib.fake_a", "def start():\n    return B['work']()\n\ndef helper():\n    return 1\n")
    b = _module("ferlib.fake_b", "def work():\n    return A['helper']()\n\ndef plain():\n    return 2\n")
    a["B"], b["A"] = b, a
    bad, seen, callers = callbacks_while(a["start"])
    assert bad == [["ferlib.fake_a", "ferlib.fake_b", "ferlib.fake_a"]] and seen == {"ferlib.fake_a", "ferlib.fake_b"}
    assert callers == {"ferlib.fake_b": {"ferlib.fake_a"}, "ferlib.fake_a": {"ferlib.fake_b"}}
    a["start"] = _module("ferlib.fake_a", "def start():\n    return B['plain']()\n")["start"]
    a["start"].__globals__["B"] = b
    assert callbacks_while(a["start"])[0] == []


def test_loading_the_default_model_is_a_straight_path(monkeypatch):
    import ferlib.inference.checkpoint as ck
    import ferlib.inference.export as ex
    import ferlib.inference.runtime as rt

    calls = {"load_checkpoint": 0, "onnx_bytes": 0, "check": 0}

    def counted(module, name, key):
        fn = getattr(module, name)

        def wrapper(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        monkeypatch.setattr(module, name, wrapper)

    counted(ck, "load_checkpoint", "load_checkpoint")
    counted(ex, "onnx_bytes", "onnx_bytes")
    counted(ex, "_check_parity", "check")
    rt._EXPORTS.clear()  # a first start in this process: nothing cached
    pipes = []
    bad, seen, callers = callbacks_while(lambda: pipes.append(Pipeline(default_model_path(), mode="static")))
    pipe = pipes[0]
    pipe.close()
    # the default, its image fallback for faces without a mesh, its expert for turned faces
    models = 1 + (pipe.fallback is not None) + (pipe.turned is not None)
    assert {"ferlib.inference.runtime", "ferlib.inference.checkpoint", "ferlib.inference.export",
            "ferlib.inference.runners"} <= seen
    assert [" -> ".join(c) for c in bad] == [], "a module called back into one that called it"
    # each checkpoint read once, exported once, and the export not re-checked while loading
    assert calls == {"load_checkpoint": models, "onnx_bytes": models, "check": 0}
    # the runner is built by the runtime only; the export is made for the runtime only
    assert callers["ferlib.inference.runners"] == {"ferlib.inference.runtime"}
    assert callers["ferlib.inference.export"] == {"ferlib.inference.runtime"}
