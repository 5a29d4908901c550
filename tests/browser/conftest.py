"""Fixtures of the real-browser tests: the fake-camera .y4m made from the committed fixture clip."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .harness import ROOT, require_browser_tools

FIXTURE_CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"


def _make_y4m():
    spec = importlib.util.spec_from_file_location("make_y4m", ROOT / "scripts" / "make_y4m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_y4m


@pytest.fixture(scope="session")
def y4m_clip(tmp_path_factory) -> Path:
    """The whole fixture clip (19.7 s, 640x360, 23.98 fps; sad, then laughing) as a .y4m fake camera."""
    require_browser_tools()
    return _make_y4m()(FIXTURE_CLIP, tmp_path_factory.mktemp("y4m") / "clip.y4m")
