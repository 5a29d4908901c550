"""Minimal WebRTC page for the browser harness: counts the frames the server callback receives.

Run by tests/browser/test_browser_echo.py; it is not part of the product.
"""
from __future__ import annotations

import threading
import time

import av
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer


class FrameCounter:
    """Thread-safe count of frames seen by the callback (which runs outside the script thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.size = (0, 0)

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        with self._lock:
            self.count += 1
            self.size = (frame.width, frame.height)
        return frame

    def snapshot(self) -> tuple[int, tuple[int, int]]:
        with self._lock:
            return self.count, self.size


st.title("WebRTC echo")
counter = st.session_state.setdefault("counter", FrameCounter())
ctx = webrtc_streamer(
    key="echo",
    mode=WebRtcMode.SENDRECV,
    rtc_configuration={"iceServers": []},
    media_stream_constraints={"video": True, "audio": False},
    video_frame_callback=counter,
    async_processing=True,
)
status = st.empty()
while True:
    n, (w, h) = counter.snapshot()
    status.markdown(f"Frames processed: {n} ({w}x{h})")
    if not (ctx.state.playing or ctx.state.signalling):  # keep counting while the connection comes up
        break
    time.sleep(0.25)
