"""scripts/make_y4m.py: the fake-camera file Chromium plays (needs ffmpeg, not a browser)."""
from __future__ import annotations

import shutil

import pytest

from ferlib.errors import InputError

from .conftest import FIXTURE_CLIP, _make_y4m
from .harness import unavailable


@pytest.fixture
def make_y4m():
    if shutil.which("ffmpeg") is None:
        unavailable("ffmpeg is missing (apt-get install ffmpeg)")
    return _make_y4m()


def test_fit_pad_fps_and_cut(make_y4m, tmp_path):
    out = make_y4m(FIXTURE_CLIP, tmp_path / "cam.y4m", size="640x480", fps=30, start=10, seconds=0.5)
    data = out.read_bytes()
    header = data.split(b"\n", 1)[0].split()
    assert header[:4] == [b"YUV4MPEG2", b"W640", b"H480", b"F30:1"] and b"C420mpeg2" in header
    frame = 640 * 480 * 3 // 2
    body = data.split(b"\n", 1)[1]
    assert body.startswith(b"FRAME\n") and len(body) == 15 * (len(b"FRAME\n") + frame)  # 0.5 s at 30 fps
    assert [p.name for p in tmp_path.iterdir()] == ["cam.y4m"]  # no temp file left


def test_bad_inputs_name_the_input(make_y4m, tmp_path):
    with pytest.raises(InputError, match="missing.mp4 does not exist"):
        make_y4m(tmp_path / "missing.mp4", tmp_path / "x.y4m")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match="could not convert video .*bad.mp4"):
        make_y4m(bad, tmp_path / "x.y4m")
    with pytest.raises(InputError, match="641x480"):
        make_y4m(FIXTURE_CLIP, tmp_path / "x.y4m", size="641x480")
    assert not (tmp_path / "x.y4m").exists()
