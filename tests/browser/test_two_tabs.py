"""Two browser tabs record into two Studio sessions at the same time: nothing lost, nothing mixed."""
from __future__ import annotations

import re
from contextlib import ExitStack

import pytest

from ferlib.store import Store

from .harness import (
    ROOT,
    chromium_page,
    netns,
    prepare_studio,
    screenshot,
    streamlit_server,
    wait_for_number,
    webrtc_stream,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _prepare(page, srv, session: str, emotion: str) -> None:
    page.goto(srv.url)
    page.get_by_role("link", name="Studio", exact=True).click()
    page.get_by_role("heading", name=re.compile("^Studio")).first.wait_for()
    prepare_studio(page, session, emotion)


def _toggle_recording(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('label')].some(l => l.innerText.includes("
        "'Record continuously') && !l.querySelector('input').disabled)", timeout=60_000)
    page.get_by_text("Record continuously").click()


def test_two_tabs_record_into_two_sessions_at_once(tmp_path, y4m_clip):
    data = tmp_path / "data"
    tabs = {"tab one": "happy", "tab two": "sad"}
    with netns() as ns, streamlit_server(ROOT / "app.py", ns, {"FERLIB_DATA": str(data)}, name="two-tabs") as srv, \
            chromium_page(ns, y4m_clip) as first:
        pages = {"tab one": first, "tab two": first.context.new_page()}
        for session, page in pages.items():
            page.set_default_timeout(30_000)
            _prepare(page, srv, session, tabs[session])
        with ExitStack() as streams:
            for page in pages.values():
                streams.enter_context(webrtc_stream(page))
            for page in pages.values():
                _toggle_recording(page)
            for session, page in pages.items():  # both record at the same time
                wait_for_number(page, "Samples recorded", 4, timeout=120, shot=f"two-tabs-{session}")
            for session, page in pages.items():
                screenshot(page, f"two-tabs-{session.replace(' ', '-')}")
                _toggle_recording(page)
        for page in pages.values():
            assert page.locator('[data-testid="stException"]').count() == 0
    st = Store(data)
    df = st.samples()
    assert set(df.session) == set(tabs)
    for session, emotion in tabs.items():
        part = df[df.session == session]
        assert len(part) >= 5, f"{session}: {len(part)} samples"
        assert set(part.emotion) == {emotion}, f"{session}: samples of the other tab"
        assert len(set(part.frame_index)) == len(part), f"{session}: a frame stored twice"
    both = [df[df.session == s].timestamp for s in tabs]
    assert max(both[0].min(), both[1].min()) < min(both[0].max(), both[1].max()), "the recordings overlapped"
    assert st.check().clean, "every row has its files and no file is without a row"
