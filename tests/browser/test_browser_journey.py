"""The whole journey a new user walks, in headless Chromium with the fixture clip as the camera (issue 15).

Studio: sad samples from the clip's first 9 s (one browser whose fake camera plays only that part),
then happy samples from 11-19 s (a second browser) into the same session; Train with the page's
defaults; Make live; Evaluate the new model beside the shipped default (confusion matrices); Live
names the new model and shows its label. It fails on any page exception, any server traceback and
any request to another host. Screenshots of every page, at 1280x800 along the way and at 1920x1080
at the end, land in test-artifacts/journey-*.png.
"""
from __future__ import annotations

import re
import sqlite3
from urllib.parse import urlparse

import pytest

from ferlib.classes import CLASSES

from .conftest import FIXTURE_CLIP, _make_y4m
from .harness import (
    ROOT,
    body_text,
    chromium_page,
    doc_image,
    netns,
    prepare_studio,
    require_browser_tools,
    screenshot,
    streamlit_server,
    wait_for_number,
    wait_for_script_idle,
    wait_for_text,
    webrtc_stream,
)

APP = ROOT / "app.py"
pytestmark = [pytest.mark.browser, pytest.mark.slow]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "10.213.0.1", "10.213.0.2"}
HEADINGS = {"Home": "ferlib: facial emotion recognition", "Live": "Live", "Studio": "Studio",
            "Train": "Train", "Evaluate": "Evaluate"}
SESSION, SAMPLES_PER_EMOTION = "me", 12


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(sad, happy) fake cameras: the clip's 0-9 s and 11-19 s, each played in a loop."""
    require_browser_tools()
    d = tmp_path_factory.mktemp("journey-y4m")
    make = _make_y4m()
    return (make(FIXTURE_CLIP, d / "sad.y4m", start=0.0, seconds=9.0),
            make(FIXTURE_CLIP, d / "happy.y4m", start=11.0, seconds=8.0))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(namespace, server, data folder) of the real app on an empty data folder."""
    require_browser_tools()
    if not any((ROOT / "models").glob("*.safetensors")):
        pytest.skip("the journey fine-tunes a shipped model: models/ has none")
    data = tmp_path_factory.mktemp("journey_data")
    with netns() as ns, streamlit_server(APP, ns, {"FERLIB_DATA": str(data)}, name="journey") as srv:
        yield ns, srv, data


class Guard:
    """Records every request to a host outside the namespace's own addresses."""

    def __init__(self):
        self.outside: list[str] = []

    def attach(self, page) -> None:
        page.context.on("request", self._seen)

    def _seen(self, request) -> None:
        u = urlparse(request.url)
        if u.scheme in ("http", "https", "ws", "wss") and u.hostname not in LOCAL_HOSTS:
            self.outside.append(request.url)


def _check(page, srv, guard: Guard) -> None:
    """No page exception, no server traceback, no request to another host so far."""
    assert page.locator('[data-testid="stException"]').count() == 0, body_text(page)[:3000]
    log = srv.log.read_text(errors="replace")
    assert "Traceback" not in log, srv.log_tail(60)
    assert not guard.outside, f"requests to other hosts: {guard.outside[:5]}"


def _go(page, title: str) -> None:
    """Go to page `title` through the sidebar link, as a person would (the session is kept)."""
    heading = page.get_by_role("heading", name=re.compile("^" + re.escape(HEADINGS[title]))).first
    for attempt in range(3):  # a click landing while the previous page's script still runs can be lost
        try:
            page.get_by_role("link", name=title, exact=True).click()
            heading.wait_for(timeout=15_000)
            page.wait_for_timeout(300)
            wait_for_script_idle(page)
            return
        except Exception:
            if attempt == 2:
                screenshot(page, f"journey-{title.lower()}-failed")
                raise


def _record(page, srv, guard, emotion: str, shot: str) -> None:
    """Studio: consent, session SESSION, `emotion`, START, record until SAMPLES_PER_EMOTION are in."""
    _go(page, "Studio")
    prepare_studio(page, SESSION, emotion)
    with webrtc_stream(page):
        page.wait_for_function(
            "() => [...document.querySelectorAll('label')].some(l => l.innerText.includes("
            "'Record continuously') && !l.querySelector('input').disabled)", timeout=60_000)
        record = page.get_by_text("Record continuously")
        record.click()
        wait_for_number(page, "Samples recorded", SAMPLES_PER_EMOTION - 1, timeout=120, shot=shot)
        record.click()
        wait_for_text(page, r"Recording: no", timeout=30, shot=shot)
        page.get_by_text("Coverage of").scroll_into_view_if_needed()
        screenshot(page, shot)
    _check(page, srv, guard)


def _chart_titles(page) -> list[str]:
    return [t.strip() for t in page.locator(".js-plotly-plot .gtitle").all_text_contents()]


def _wait_for_titles(page, prefixes: tuple[str, ...], n: int, timeout: float, shot: str) -> list[str]:
    """Poll until `n` chart titles start with each of `prefixes` (the page draws its charts one by
    one); returns every chart title."""
    for _ in range(int(timeout * 4)):
        titles = _chart_titles(page)
        if all(sum(t.startswith(p) for t in titles) >= n for p in prefixes):
            return titles
        page.wait_for_timeout(250)
    screenshot(page, f"{shot}-timeout")
    pytest.fail(f"fewer than {n} charts titled each of {prefixes!r}: {_chart_titles(page)}; page text:\n"
                f"{body_text(page)[:3000]}", pytrace=False)


def test_the_whole_journey_in_a_browser(app, clips):
    ns, srv, data = app
    sad, happy = clips
    guard = Guard()

    # -- Studio, sad: a browser whose camera shows only the clip's sad part
    with chromium_page(ns, sad, viewport=(1280, 800)) as page:
        guard.attach(page)
        page.goto(srv.url)
        page.get_by_role("heading", name=re.compile("^ferlib")).first.wait_for()
        wait_for_script_idle(page)
        screenshot(page, "journey-1280-home-empty")
        _check(page, srv, guard)
        _record(page, srv, guard, "sad", "journey-1280-studio-sad")

    # -- Studio, happy; then Train, Make live, Evaluate and Live in the same browser
    with chromium_page(ns, happy, viewport=(1280, 800)) as page:
        guard.attach(page)
        page.goto(srv.url)
        page.get_by_role("heading", name=re.compile("^ferlib")).first.wait_for()
        wait_for_script_idle(page)
        _record(page, srv, guard, "happy", "journey-1280-studio-happy")
        text = body_text(page)
        assert re.search(r"Session: me, \d+ samples in all \(happy \d+, sad \d+\)", text), text[:2000]
        page.get_by_role("tab", name="Review").click()
        page.wait_for_timeout(500)
        doc_image(screenshot(page, "journey-1280-studio-review"), "studio")

        # Train from the defaults: the shipped default model, every session; one click
        _go(page, "Train")
        wait_for_text(page, r"Training uses: happy \d+, sad \d+", timeout=30, shot="journey-train")
        assert "contempt" not in body_text(page)
        screenshot(page, "journey-1280-train-ready")
        page.get_by_role("button", name="Start training").click()
        m = wait_for_text(page, r"Registered as (my model v\d+)", timeout=240, shot="journey-train")
        model = m.group(1)
        _check(page, srv, guard)
        doc_image(screenshot(page, "journey-1280-train-done"), "train")
        page.get_by_role("button", name="Make live").click()
        wait_for_text(page, rf"{re.escape(model)} is live", timeout=30, shot="journey-train")
        assert page.get_by_role("button", name="Make live").count() == 0
        screenshot(page, "journey-1280-train-live")
        _check(page, srv, guard)

        # Evaluate: the new (live) model beside the shipped default, on the test split
        _go(page, "Evaluate")
        page.get_by_role("button", name="Evaluate", exact=True).click()
        titles = _wait_for_titles(page, ("Counts", "Row-normalised"), 2, timeout=120, shot="journey-evaluate")
        assert sum(t.startswith("Counts") for t in titles) == 2, titles
        assert sum(t.startswith("Row-normalised") for t in titles) == 2, titles
        assert "shipped: " in body_text(page)
        doc_image(screenshot(page, "journey-1280-evaluate"), "evaluate")
        _check(page, srv, guard)

        # Live: the new model by default, named, with its label
        _go(page, "Live")
        assert f"{model} (live)" in body_text(page)
        frame = page.locator('iframe[src*="streamlit_webrtc"]').first
        frame.wait_for(state="visible", timeout=30_000)  # the component's iframe mounts after the page text
        video = frame.bounding_box()
        main = page.locator('[data-testid="stMainBlockContainer"]').first.bounding_box()
        assert video and main and video["width"] > 0.45 * main["width"], (video, main)  # 3/5 of the content, not 2/5
        with webrtc_stream(page):
            wait_for_number(page, "Frames processed", 3, timeout=180, shot="journey-live")
            label = wait_for_text(page, r"Prediction: (\w+) \((\d+)%\)", timeout=60, shot="journey-live")
            assert label.group(1) in CLASSES
            assert any(model in t for t in _chart_titles(page)), _chart_titles(page)
            wait_for_text(page, rf"Path: (box|mesh) \({re.escape(model)}", timeout=30, shot="journey-live")
            doc_image(screenshot(page, "journey-1280-live"), "live")
        _check(page, srv, guard)

        # every page at 1920x1080 (the session, and so the Evaluate results, are kept)
        page.set_viewport_size({"width": 1920, "height": 1080})
        for title in ("Home", "Studio", "Train", "Evaluate", "Live"):
            _go(page, title)
            screenshot(page, f"journey-1920-{title.lower()}")
        assert model in body_text(page)
        _check(page, srv, guard)

    with sqlite3.connect(data / "catalogue.sqlite") as db:
        counts = dict(db.execute("SELECT emotion, COUNT(*) FROM samples GROUP BY emotion").fetchall())
        live = db.execute("SELECT name FROM models WHERE is_live = 1").fetchall()
    assert counts.get("sad", 0) >= SAMPLES_PER_EMOTION and counts.get("happy", 0) >= SAMPLES_PER_EMOTION, counts
    assert live == [("my model",)]
