"""Convert a video into a .y4m file that Chromium can play as a fake webcam.

Chromium's `--use-file-for-fake-video-capture=clip.y4m` plays raw YUV 4:2:0 frames in a loop at the
file's frame rate. The browser tests make one from the committed fixture clip at test time
(a .y4m is ~350 kB per 640x360 frame, so it is never committed). Usage:
  .venv/bin/python scripts/make_y4m.py tests/fixtures/WolfgangLanger_Pexels.mp4 out.y4m \
      [--size 640x480 --fps 30] [--start 10 --seconds 5]
--size scales the video to fit inside WxH and pads it (black) to exactly WxH: the benchmark variant
is 640x480 at 30 fps, a typical webcam.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ferlib.errors import InputError, StorageError  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 640x480") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise InputError(f"size {text!r}: width and height must be positive and even (YUV 4:2:0)")
    return w, h


STILL_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def make_y4m(src: str | Path, dst: str | Path, size: str | None = None, fps: float | None = None,
             start: float = 0.0, seconds: float | None = None) -> Path:
    """Write `src` as YUV 4:2:0 .y4m to `dst` atomically; optional fit+pad to `size` ("WxH"), frame
    rate `fps`, and a cut of `seconds` from `start`. A still image (STILL_EXTENSIONS) loops for `seconds`. Raises InputError for a bad video or option."""
    src, dst = Path(src), Path(dst)
    if shutil.which("ffmpeg") is None:
        raise InputError("ffmpeg is not installed (apt-get install ffmpeg): it is needed to make a .y4m")
    if not src.is_file():
        raise InputError(f"video {src} does not exist or is not a file")
    if fps is not None and not 0 < fps <= 120:
        raise InputError(f"fps {fps} must be in (0, 120]")
    if start < 0 or (seconds is not None and seconds <= 0):
        raise InputError(f"start {start} must be >= 0 and seconds {seconds} > 0")
    filters = []
    if size:
        w, h = _size(size)
        filters += [f"scale={w}:{h}:force_original_aspect_ratio=decrease",
                    f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2", "setsar=1"]
    if fps:
        filters.append(f"fps={fps:g}")
    still = src.suffix.lower() in STILL_EXTENSIONS  # a photo as the camera: looped for `seconds`
    if still and seconds is None:
        raise InputError(f"a still image ({src.name}) as a video needs seconds")
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-loop", "1", "-i", str(src)] if still else ["-ss", f"{start:g}", "-i", str(src)]
    if seconds is not None:
        cmd += ["-t", f"{seconds:g}"]
    if filters:
        cmd += ["-vf", ",".join(filters)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    cmd += ["-an", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(tmp)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            raise InputError(f"ffmpeg could not convert video {src}: {res.stderr.strip()[-500:] or 'no frames'}")
        try:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dst)
        except OSError as e:
            raise StorageError(f"could not write {dst}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="input video (anything ffmpeg reads)")
    ap.add_argument("dst", help="output .y4m")
    ap.add_argument("--size", help="fit inside and pad to WIDTHxHEIGHT, e.g. 640x480")
    ap.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    ap.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    ap.add_argument("--seconds", type=float, help="duration in seconds (default: to the end)")
    a = ap.parse_args(argv)
    try:
        out = make_y4m(a.src, a.dst, a.size, a.fps, a.start, a.seconds)
    except (InputError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
