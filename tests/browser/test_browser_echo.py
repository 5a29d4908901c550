"""The harness itself, on a minimal WebRTC page: real Chromium -> WebRTC -> server callback -> back."""
from __future__ import annotations

import pytest

from .harness import (
    ROOT,
    body_text,
    chromium_page,
    netns,
    read_number,
    screenshot,
    streamlit_server,
    wait_for_number,
    webrtc_frame,
    webrtc_stream,
)

ECHO_APP = ROOT / "tests" / "browser" / "echo_app.py"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_echo_frames_reach_the_server_callback_and_come_back(y4m_clip):
    with netns() as ns, streamlit_server(ECHO_APP, ns, name="echo") as srv, chromium_page(ns, y4m_clip) as page:
        page.goto(srv.url)
        page.get_by_text("Frames processed").wait_for()
        assert read_number(page, "Frames processed") == 0
        with webrtc_stream(page):
            n = wait_for_number(page, "Frames processed", 30, timeout=45, shot="echo")
            assert "(640x360)" in body_text(page)  # the fake camera's frames, at the .y4m's size
            video = webrtc_frame(page).locator("video")
            page.wait_for_function("v => v.currentTime > 0.5 && v.videoWidth === 640",
                                   arg=video.element_handle(), timeout=20_000)
            screenshot(page, "echo")
        # STOP ended the stream on the server: the count stops growing
        page.wait_for_timeout(1500)
        stopped = read_number(page, "Frames processed")
        page.wait_for_timeout(1500)
        assert stopped is not None and stopped >= n and read_number(page, "Frames processed") == stopped
