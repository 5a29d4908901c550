"""The real app in headless Chromium: fixture clip -> fake camera -> WebRTC -> ferlib -> page.

One app server (its own namespace and temporary FERLIB_DATA) serves every test of this module;
each test gets a fresh browser. Screenshots of every page land in test-artifacts/.
"""
from __future__ import annotations

import json
import re
import sqlite3

import pytest

from ferlib.classes import CLASSES
from ferlib.inference.pipeline import default_model_path

from .conftest import _make_y4m
from .harness import (
    ROOT,
    body_text,
    chromium_page,
    netns,
    prepare_studio,
    require_browser_tools,
    screenshot,
    streamlit_server,
    wait_for_count,
    wait_for_number,
    wait_for_script_idle,
    wait_for_text,
    webrtc_stream,
)

APP = ROOT / "app.py"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _ensure_a_model(data_dir) -> None:
    """The Live page needs a model: the shipped ones when models/ has any, else an untrained (but
    real) checkpoint registered in the test's store (the test checks the stream, not accuracy)."""
    if any(p.with_suffix(".json").exists() for p in (ROOT / "models").glob("*.safetensors")):
        return
    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model
    from ferlib.store import Store

    store = Store(data_dir)
    model = create_model("landmark_cnn1d", num_classes=len(CLASSES))
    wpath, _ = save_checkpoint(model, store.model_dir("untrained") / "model",
                               make_card(model, list(CLASSES), spec_for_model(model)))
    store.add_model("untrained", wpath, json.loads(wpath.with_suffix(".json").read_text()))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(namespace, server, data folder) of the real app, stopped after the module."""
    require_browser_tools()
    data = tmp_path_factory.mktemp("ferlib_data")
    _ensure_a_model(data)
    with netns() as ns, streamlit_server(APP, ns, {"FERLIB_DATA": str(data)}, name="app") as srv:
        yield ns, srv, data


HEADINGS = {"Home": "ferlib: facial emotion recognition", "Live": "Live", "Studio": "Studio",
            "Train": "Train", "Evaluate": "Evaluate"}


def _open(page, srv, title: str) -> None:
    """Open the app and go to page `title` through its navigation link, as a person would."""
    page.goto(srv.url)
    try:
        page.get_by_role("link", name=title, exact=True).click()
        page.get_by_role("heading", name=re.compile("^" + re.escape(HEADINGS[title]))).first.wait_for()
        wait_for_script_idle(page)
    except Exception:
        screenshot(page, f"app-{title.lower()}-failed")
        raise


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, body_text(page)[:3000]


def test_home_train_and_evaluate_pages_render_without_error(app, y4m_clip):
    ns, srv, _ = app
    with chromium_page(ns, y4m_clip) as page:
        for title in ("Home", "Train", "Evaluate"):
            _open(page, srv, title)
            screenshot(page, f"app-{title.lower()}")
            _no_exception(page)


def test_live_page_processes_frames_and_shows_probabilities_and_fps(app, y4m_clip):
    ns, srv, data = app
    with chromium_page(ns, y4m_clip) as page:
        _open(page, srv, "Live")
        with webrtc_stream(page):
            wait_for_number(page, "Frames processed", 20, timeout=120, shot="app-live")
            fps = wait_for_number(page, "FPS", 0, timeout=30, shot="app-live")
            m = wait_for_text(page, r"Prediction: (\w+) \((\d+)%\)", timeout=60, shot="app-live")
            assert m.group(1) in CLASSES and 0 < int(m.group(2)) <= 100, m.group(0)
            assert re.search(r"Latency p95: \d+ ms", body_text(page))
            # one face: the default meshes it to frontalise it if turned (its expert reads turned faces)
            wait_for_text(page, rf"Path: mesh \({re.escape(default_model_path().stem)}(_turns)?\)", timeout=30,
                          shot="app-live")
            page.get_by_text("Face-mesh overlay", exact=True).click()
            wait_for_text(page, r"Head pose: yaw [+-]\d+°", timeout=30, shot="app-live")
            wait_for_text(page, r"Path: mesh", timeout=30, shot="app-live")
            # the probability and performance charts (drawn after the text, and redrawn by the toggle's rerun)
            charts = wait_for_count(page, ".js-plotly-plot", 2, timeout=30, shot="app-live")
            legend = ""
            for _ in range(120):  # the legend is drawn with the chart, each redraw a moment after its element
                legend = charts.first.inner_text()
                if sum(c in legend for c in CLASSES) >= 2:
                    break
                page.wait_for_timeout(250)
            assert sum(c in legend for c in CLASSES) >= 2, f"probability chart legend: {legend!r}"
            screenshot(page, "app-live")
        _no_exception(page)
    assert fps > 0


def test_live_page_reads_a_group_of_five(app, tmp_path):
    """The group photo (../shared/media/multi_face.jpg, five people) as a 30 fps camera at 640 px: the page
    lists five faces ("Faces in view: 5" above the face table, and the choice the chart follows) and
    the overlay is saved as a screenshot (test-artifacts/app-live-group.png). The overlay's geometry on this
    photo (labels inside the frame, none over another face's box) is checked from the drawn rectangles in
    tests/test_draw_label.py, through the same pipeline and drawing code."""
    photo = ROOT.parent / "shared" / "media" / "multi_face.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} is absent (../shared/media is only on the developers' and CI machines)")
    camera = _make_y4m()(photo, tmp_path / "group.y4m", size="640x428", fps=30, seconds=8)
    ns, srv, _ = app
    with chromium_page(ns, camera) as page:
        _open(page, srv, "Live")
        with webrtc_stream(page):
            wait_for_number(page, "Frames processed", 20, timeout=120, shot="app-live-group")
            wait_for_text(page, r"Faces in view: 5", timeout=30, shot="app-live-group")
            assert "Chart and bars follow" in body_text(page)
            page.wait_for_timeout(1500)
            screenshot(page, "app-live-group")
        _no_exception(page)


def test_studio_recording_lands_in_the_catalogue_with_its_label(app, y4m_clip):
    ns, srv, data = app
    session, emotion = "browser session", "surprise"
    with chromium_page(ns, y4m_clip) as page:
        _open(page, srv, "Studio")
        prepare_studio(page, session, emotion)
        screenshot(page, "app-studio-ready")
        with webrtc_stream(page):
            record = page.get_by_text("Record continuously")
            page.wait_for_function(
                "() => [...document.querySelectorAll('label')].some(l => l.innerText.includes("
                "'Record continuously') && !l.querySelector('input').disabled)", timeout=30_000)
            record.click()
            wait_for_number(page, "Samples recorded", 4, timeout=60, shot="app-studio")
            screenshot(page, "app-studio-recording")
            record.click()
    with sqlite3.connect(data / "catalogue.sqlite") as db:
        rows = db.execute("SELECT s.emotion, s.landmarks_path FROM samples s JOIN sessions x "
                          "ON s.session_id = x.id WHERE x.name = ?", (session,)).fetchall()
    assert len(rows) >= 5, rows
    assert {r[0] for r in rows} == {emotion}
    assert all((data / r[1]).exists() for r in rows), "a catalogued sample's landmarks file is missing"
