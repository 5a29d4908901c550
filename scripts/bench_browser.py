"""Browser end-to-end benchmark of the Live page: a 30 fps fake camera (640x360 by default) in headless Chromium.

    .venv/bin/python scripts/bench_browser.py [--seconds 20] [--warmup 10] [--size 640x360] [--out benchmarks]

The real app runs in a private network namespace (tests/browser/harness.py: needs root, Chromium,
ffmpeg and `ip`); the fake camera loops the fixture clip's laughing part (10-18 s) letterboxed to
--size at 30 fps. After a warm-up, the script reads what the Live page shows: the "Frames
processed" counter (processed frames per second over the timed window), the "FPS" readout once a
second, the frames the browser's video element received and rendered from the server
(`getVideoPlaybackQuality().totalVideoFrames` of the component's output video, over the window),
and at the end the per-frame processing latencies of the page's performance chart (its last 10 s
of frames) -> median and p95, and the share of the machine's CPU busy over the window. First, the
ceiling: the same camera through tests/browser/echo_app.py, a page whose callback returns each frame
untouched (what WebRTC's decode and encode in the server and in Chromium leave on this machine;
--no-echo skips it). Writes <out>/<date>-<name>.json and .md and prints the Markdown.
Targets (issue 12): page >= 25 FPS, browser >= 25 fps, processing p95 <= 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (the harness reports a missing tool as a pytest skip)

from ferlib.bench import md_table  # noqa: E402
from ferlib.fsutil import atomic_write_bytes  # noqa: E402
from tests.browser.harness import (  # noqa: E402
    chromium_page,
    netns,
    read_number,
    screenshot,
    streamlit_server,
    wait_for_number,
    webrtc_stream,
)

CAMERA_FPS, CAMERA_SIZE = 30, "640x360"
TARGET_FPS, TARGET_P95_MS = 25.0, 50.0
CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
ECHO_APP = ROOT / "tests" / "browser" / "echo_app.py"
VIDEO_FRAMES_JS = """() => Array.from(document.querySelectorAll('video'))
  .map(v => v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : null)"""
LATENCY_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot'))
    for (const t of (g.data || [])) if (t.name === 'latency ms') return Array.from(t.y);
  return null;
}"""


def _make_y4m():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_y4m", ROOT / "scripts" / "make_y4m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_y4m


def _model_for_live(data_dir: Path) -> str:
    """The shipped models when models/ has any; else register an untrained landmark_cnn1d in the store."""
    from ferlib.inference.pipeline import default_model_path, shipped_models

    if shipped_models():
        return f"shipped {default_model_path().stem} (the Live page's default)"
    from ferlib.classes import FER7
    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model
    from ferlib.store import Store

    store = Store(data_dir)
    model = create_model("landmark_cnn1d")
    wpath, cpath = save_checkpoint(model, store.model_dir("untrained") / "model",
                                   make_card(model, list(FER7), spec_for_model(model)))
    store.add_model("untrained", wpath, json.loads(cpath.read_text()))
    store.close()
    return "untrained landmark_cnn1d (models/ has no shipped checkpoint; timing does not depend on weights)"


def _video_frames(page) -> int | None:
    """Frames rendered by the busiest <video> in the page or its frames (the component's output)."""
    counts = []
    for frame in page.frames:
        try:
            counts += [c for c in frame.evaluate(VIDEO_FRAMES_JS) if c is not None]
        except Exception:  # a frame navigating or detached
            pass
    return max(counts) if counts else None


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat); busy excludes idle and iowait."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _busy_share(a: tuple[float, float], b: tuple[float, float]) -> float:
    return (b[0] - a[0]) / max(b[1] - a[1], 1e-9)


def measure_echo(y4m: Path, seconds: float, warmup: float) -> dict:
    """The transport's ceiling on this machine: the same camera through WebRTC to a server callback
    that returns each frame untouched (tests/browser/echo_app.py) and back to the browser."""
    with netns() as ns, streamlit_server(ECHO_APP, ns, name="bench-echo") as srv, \
            chromium_page(ns, y4m, timeout_ms=60_000) as page:
        page.goto(srv.url)
        page.get_by_text("Frames processed").wait_for()
        with webrtc_stream(page, timeout_ms=60_000):
            wait_for_number(page, "Frames processed", 10, timeout=120, shot="bench-echo")
            page.wait_for_timeout(warmup * 1000)
            v0, c0 = _video_frames(page), _cpu_busy()
            n0, t0 = read_number(page, "Frames processed"), time.monotonic()
            page.wait_for_timeout(seconds * 1000)
            n1, t1 = read_number(page, "Frames processed"), time.monotonic()
            v1, c1 = _video_frames(page), _cpu_busy()
    return {"echo_processed_fps": (n1 - n0) / (t1 - t0),
            "echo_browser_fps": (v1 - v0) / (t1 - t0) if v0 is not None and v1 is not None else None,
            "echo_cpu_busy": _busy_share(c0, c1)}


def measure(seconds: float, warmup: float, size: str = CAMERA_SIZE, echo: bool = True, camera: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ferlib-bench-browser-") as tmp:
        tmp = Path(tmp)
        y4m = (_make_y4m()(CLIP, tmp / "camera.y4m", size=size, fps=CAMERA_FPS, start=10, seconds=8) if camera is None
               else _make_y4m()(camera, tmp / "camera.y4m", size=size, fps=CAMERA_FPS, seconds=8))
        ceiling = measure_echo(y4m, seconds, warmup) if echo else {}
        model = _model_for_live(tmp / "data")
        env = {"FERLIB_DATA": str(tmp / "data")}
        with netns() as ns, streamlit_server(ROOT / "app.py", ns, env, name="bench-browser") as srv, \
                chromium_page(ns, y4m, timeout_ms=60_000) as page:
            page.goto(srv.url)
            page.get_by_role("link", name="Live", exact=True).click()
            page.get_by_role("heading", name=re.compile("^Live")).first.wait_for()
            with webrtc_stream(page, timeout_ms=60_000):
                wait_for_number(page, "Frames processed", 10, timeout=120, shot="bench-browser")
                page.wait_for_timeout(warmup * 1000)
                v0, c0 = _video_frames(page), _cpu_busy()
                n0, t0 = read_number(page, "Frames processed"), time.monotonic()
                fps_readout = []
                while time.monotonic() - t0 < seconds:
                    page.wait_for_timeout(1000)
                    fps_readout.append(read_number(page, "FPS"))
                n1, t1 = read_number(page, "Frames processed"), time.monotonic()
                v1, c1 = _video_frames(page), _cpu_busy()
                latency = page.evaluate(LATENCY_JS)
                p95_page = read_number(page, "Latency p95")
                screenshot(page, "bench-browser-live")
    if not latency:
        raise RuntimeError("the Live page's performance chart has no 'latency ms' trace")
    lat = np.asarray(latency, dtype=np.float64)
    fps = [v for v in fps_readout if v is not None]
    source = "fixture clip 10-18 s" if camera is None else f"{Path(camera).name}, 8 s"
    return {"model": model, "camera": f"{size} @ {CAMERA_FPS} fps ({source}, letterboxed, looped)",
            "warmup_s": warmup, "window_s": t1 - t0, "frames_processed": n1 - n0,
            "processed_fps": (n1 - n0) / (t1 - t0),
            "browser_fps": (v1 - v0) / (t1 - t0) if v0 is not None and v1 is not None else None, "page_fps_median": float(np.median(fps)) if fps else None,
            "page_fps_p10": float(np.percentile(fps, 10)) if fps else None,
            "latency_median_ms": float(np.median(lat)), "latency_p95_ms": float(np.percentile(lat, 95)),
            "latency_samples": int(lat.size), "page_latency_p95_ms": p95_page, "cpu_busy": _busy_share(c0, c1),
            **ceiling}


def to_markdown(r: dict, command: str) -> str:
    rows = [{"metric": "frames processed per second (counter over the window)", "value": r["processed_fps"]},
            {"metric": "frames the browser rendered per second (output video)",
             "value": r["browser_fps"] if r["browser_fps"] is not None else "n/a"},
            {"metric": "page FPS readout, median (p10)", "value": f"{r['page_fps_median']:.1f} ({r['page_fps_p10']:.1f})"
             if r["page_fps_median"] is not None else "n/a"},
            {"metric": f"processing latency median, ms ({r['latency_samples']} frames)", "value": r["latency_median_ms"]},
            {"metric": "processing latency p95, ms", "value": r["latency_p95_ms"]},
            {"metric": "page 'Latency p95' readout, ms", "value": r["page_latency_p95_ms"]},
            {"metric": "CPU busy over the window (all cores)", "value": f"{100 * r['cpu_busy']:.0f} %"}]
    if "echo_processed_fps" in r:
        echo_browser = r["echo_browser_fps"]
        rows += [{"metric": "ceiling, echo page: frames reaching the server callback per second",
                  "value": r["echo_processed_fps"]},
                 {"metric": "ceiling, echo page: frames the browser rendered per second",
                  "value": echo_browser if echo_browser is not None else "n/a"},
                 {"metric": "ceiling, echo page: CPU busy (all cores)", "value": f"{100 * r['echo_cpu_busy']:.0f} %"}]
    page_fps = r["page_fps_median"] if r["page_fps_median"] is not None else r["processed_fps"]
    browser = r["browser_fps"]
    targets = [{"target": f"page >= {TARGET_FPS:.0f} FPS (readout median)", "measured": page_fps,
                "met": page_fps >= TARGET_FPS},
               {"target": f"browser >= {TARGET_FPS:.0f} fps (rendered)", "measured": browser if browser is not None
                else "n/a", "met": browser is not None and browser >= TARGET_FPS},
               {"target": f"processing p95 <= {TARGET_P95_MS:.0f} ms", "measured": r["latency_p95_ms"],
                "met": r["latency_p95_ms"] <= TARGET_P95_MS}]
    r["targets"] = targets
    return "\n".join([
        f"# Browser benchmark {r['date']} {r['time_utc']} UTC", "",
        f"Command: `{command}`  ",
        f"Camera: {r['camera']}; model: {r['model']}.  ",
        f"Warm-up {r['warmup_s']:.0f} s, timed window {r['window_s']:.1f} s, {r['frames_processed']:.0f} frames.  ",
        f"Load average at start {', '.join(f'{x:.2f}' for x in r['load_avg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in r['load_avg_end'])}.", "",
        md_table(targets, [("target", "target"), ("measured", "measured"), ("met", "status")]), "",
        md_table(rows, [("metric", "metric"), ("value", "value")]), ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed window (default 20)")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of streaming before timing (default 10)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks"), help="folder for <date>-<name>.json/.md")
    ap.add_argument("--name", default="browser")
    ap.add_argument("--size", default=CAMERA_SIZE, help=f"fake camera WxH (default {CAMERA_SIZE})")
    ap.add_argument("--camera", default=None, help="a video or a still photo as the camera (default: the fixture "
                    "clip's laughing part); e.g. ../shared/media/multi_face.jpg, five faces")
    ap.add_argument("--no-echo", action="store_true",
                    help="skip the ceiling run (the same camera through an echo page that does no work)")
    args = ap.parse_args(argv)
    start = datetime.now(timezone.utc)
    load0 = list(os.getloadavg())
    try:
        res = measure(args.seconds, args.warmup, args.size, echo=not args.no_echo,
                      camera=Path(args.camera) if args.camera else None)
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        print(f"error: browser benchmark could not run: {e}", file=sys.stderr)
        return 2
    res.update(date=start.strftime("%Y-%m-%d"), time_utc=start.strftime("%H:%M:%S"), load_avg_start=load0,
               load_avg_end=list(os.getloadavg()))
    command = (f"python scripts/bench_browser.py --seconds {args.seconds:g} --warmup {args.warmup:g} --size {args.size}"
               + (f" --camera {args.camera}" if args.camera else "") + (" --no-echo" if args.no_echo else ""))
    md = to_markdown(res, command)
    stem = Path(args.out) / f"{res['date']}-{args.name}"
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps({"command": command, **res}, indent=1).encode())
    atomic_write_bytes(stem.with_suffix(".md"), md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
