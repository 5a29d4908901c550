"""Soak test of the Live page: a long WebRTC stream in headless Chromium, the tab closed and reopened.

Starts the real app (tests/browser/harness.py: private network namespace, temporary FERLIB_DATA),
plays the fixture clip in a loop as Chromium's fake camera on the Live page, closes the tab without
pressing STOP and reopens it `--reopen` times, and samples the server's resident memory and thread
count every `--interval` seconds. Writes a dated Markdown report (benchmarks/soak-<date>.md).
Targets: memory growth <= 50 MB while streaming; after every closed tab the thread count returns to
the level after the first one (one-time pools of the first stream excepted, listed by name).
Run by hand (root, for `ip netns`), e.g.:

    nice -n 10 .venv/bin/python scripts/soak.py --minutes 10
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.harness import chromium_page, netns, read_number, screenshot, streamlit_server, webrtc_frame  # noqa: E402

CLIP = ROOT / "tests" / "fixtures" / "WolfgangLanger_Pexels.mp4"
GROWTH_LIMIT_MB = 50.0
SETTLE_S = 60.0  # after a tab closes: Streamlit ends the session and streamlit-webrtc its stream within ~30 s


@dataclass
class Sample:
    t: float
    phase: str
    rss_mb: float
    threads: int
    frames: float | None = None


@dataclass
class Sampler:
    """Reads /proc/<pid>/status of the server every `interval` seconds in a background thread."""

    pid: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    phase: str = "start"
    frames: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def read(self) -> Sample:
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        return Sample(time.monotonic(), self.phase, rss, threads, self.frames)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.read())
            except (OSError, AttributeError):
                return

    def __enter__(self) -> "Sampler":
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()

    def mark(self, phase: str) -> Sample:
        """Start a phase and record one sample now."""
        self.phase = phase
        s = self.read()
        self.samples.append(s)
        return s


def _ensure_model(data: Path) -> str:
    """A shipped model, or else an untrained (real) checkpoint registered in the temporary store."""
    if any(p.with_suffix(".json").exists() for p in (ROOT / "models").glob("*.safetensors")):
        return "shipped model from models/"
    from ferlib.classes import FER7
    from ferlib.inference.checkpoint import make_card, save_checkpoint
    from ferlib.inputs import spec_for_model
    from ferlib.models import create_model
    from ferlib.store import Store

    store = Store(data)
    model = create_model("landmark_cnn1d", num_classes=len(FER7))
    wpath, _ = save_checkpoint(model, store.model_dir("untrained") / "model",
                               make_card(model, FER7, spec_for_model(model)))
    store.add_model("untrained", wpath, json.loads(wpath.with_suffix(".json").read_text()))
    return "untrained landmark_cnn1d (models/ has no shipped checkpoint; same pipeline cost)"


def _server_pid(proc) -> int:
    """`ip netns exec` execs the server, so the Popen pid is the Python process itself."""
    cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"streamlit" in c for c in cmd), f"pid {proc.pid} is not the streamlit server: {cmd}"
    return proc.pid


def _stream(page, srv, sampler: Sampler, seconds: float, tag: str) -> None:
    """Open the Live page, press START, stream for `seconds` (the page updating its frame count)."""
    page.goto(srv.url)
    page.get_by_role("link", name="Live", exact=True).click()
    page.get_by_role("heading", name=re.compile("^Live")).first.wait_for()
    webrtc_frame(page).get_by_role("button", name=re.compile(r"^start$", re.I)).click()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sampler.frames = read_number(page, "Frames processed")
        page.wait_for_timeout(1000)
    screenshot(page, f"soak-{tag}")
    if not sampler.frames:
        raise RuntimeError(f"{tag}: the Live page processed no frame; see test-artifacts/soak-{tag}.png")


def run(minutes: float, reopen: int, interval: float) -> dict:
    from scripts.make_y4m import make_y4m

    tmp = Path(tempfile.mkdtemp(prefix="ferlib-soak-"))
    data = tmp / "data"
    model = _ensure_model(data)
    y4m = make_y4m(CLIP, tmp / "clip.y4m")
    tabs = reopen + 1
    per_tab = minutes * 60 / tabs
    out: dict = {"minutes": minutes, "tabs": tabs, "per_tab_s": per_tab, "model": model, "events": []}
    with netns() as ns, streamlit_server(ROOT / "app.py", ns, {"FERLIB_DATA": str(data)}, name="soak") as srv:
        sampler = Sampler(_server_pid(srv.proc), interval)
        with sampler:
            t0 = time.monotonic()
            # warm-up visit without a stream: imports, caches and Streamlit's own threads exist afterwards
            with chromium_page(ns, y4m) as page:
                page.goto(srv.url)
                page.get_by_role("link", name="Live", exact=True).click()
                page.get_by_role("heading", name=re.compile("^Live")).first.wait_for()
                page.wait_for_timeout(3000)
            sampler.mark("idle")
            time.sleep(SETTLE_S)
            out["baseline"] = sampler.mark("idle")
            for k in range(1, tabs + 1):
                sampler.mark(f"tab {k} streaming")
                with chromium_page(ns, y4m) as page:
                    _stream(page, srv, sampler, per_tab, f"tab{k}")
                    out["events"].append((k, "frames", sampler.frames))
                    sampler.mark(f"tab {k} streaming")
                # the tab is closed without pressing STOP
                sampler.frames = None
                sampler.mark(f"after tab {k} closed")
                time.sleep(SETTLE_S)
                out[f"closed{k}"] = sampler.mark(f"after tab {k} closed")
            out["wall_s"] = time.monotonic() - t0
        out["samples"] = sampler.samples
        out["t0"] = t0
        out["server_log_tail"] = srv.log_tail(15)
    return out


def _tail_median(samples: list[Sample], phase: str, seconds: float = 60.0) -> float:
    """Median RSS over the last `seconds` of a phase (robust to the allocator's short spikes)."""
    ph = [x for x in samples if x.phase == phase]
    return statistics.median(x.rss_mb for x in ph if x.t >= ph[-1].t - seconds)


def report(res: dict, path: Path) -> tuple[Path, bool]:
    s, t0, tabs = res["samples"], res["t0"], res["tabs"]
    base = res["baseline"]
    streaming = [_tail_median(s, f"tab {k} streaming") for k in range(1, tabs + 1)]
    growth = streaming[-1] - streaming[0]
    closed = [res[f"closed{k}"] for k in range(1, tabs + 1)]
    idle_growth = closed[-1].rss_mb - closed[0].rss_mb
    threads_ok = all(c.threads <= closed[0].threads for c in closed[1:])  # nothing left behind per closed tab
    ok = growth <= GROWTH_LIMIT_MB and idle_growth <= GROWTH_LIMIT_MB and threads_ok
    peak = max(x.threads for x in s)
    lines = [
        f"# Soak test of the Live page, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `nice -n 10 .venv/bin/python scripts/soak.py --minutes {res['minutes']:g} --reopen {tabs - 1}`",
        "",
        f"{res['minutes']:g} minutes of WebRTC streaming in headless Chromium (fake camera: the committed fixture "
        f"clip, looped) on the Live page, in {tabs} tabs of {res['per_tab_s']:.0f} s each; each tab is closed "
        f"**without pressing STOP**, then {SETTLE_S:.0f} s idle. Model: {res['model']}. The server's resident "
        f"memory (VmRSS) and thread count are read from /proc every few seconds. Machine: 2 CPU cores shared "
        "with other jobs; the app server, Chromium and this script run on it together.",
        "",
        "## Result",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| memory while streaming, median of each tab's last 60 s | "
        f"{', '.join(f'{v:.0f}' for v in streaming)} MB: growth {growth:+.1f} MB | <= {GROWTH_LIMIT_MB:.0f} MB |",
        f"| memory after each tab closed | {', '.join(f'{c.rss_mb:.0f}' for c in closed)} MB | - |",
        f"| idle memory growth (after tab {tabs} closed - after tab 1 closed) | {idle_growth:+.1f} MB | "
        f"<= {GROWTH_LIMIT_MB:.0f} MB |",
        f"| threads: idle before any stream / after each close | {base.threads} / "
        f"{', '.join(str(c.threads) for c in closed)} | after every close = after the first |",
        f"| threads: peak while streaming | {peak} | - |",
        f"| frames processed per tab (page counter) | "
        f"{', '.join(str(int(f)) if f else '0' for _, _, f in res['events'])} | > 0 |",
        f"| verdict | {'PASS' if ok else 'FAIL'} | |",
        "",
        "## Time series",
        "",
        "| t (s) | phase | RSS (MB) | threads | frames processed |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {x.t - t0:.0f} | {x.phase} | {x.rss_mb:.1f} | {x.threads} | "
              f"{'' if x.frames is None else int(x.frames)} |" for x in s]
    lines += ["", "Server log (tail):", "", "```", res["server_log_tail"], "```", ""]
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path, ok


def graph_cycles(n: int) -> dict[str, list[float]]:
    """Server-free check of the per-stream cost: `n` Live streams (LiveProcessor: 20 frames, then
    on_ended) one after another, with a fresh Pipeline per stream and with webapp's reuse; returns
    this process's RSS (MB) after each stream, per variant."""
    import av

    from ferlib.inference.pipeline import Pipeline
    from ferlib.io import iter_video
    from webapp.resources import make_pipeline
    from webapp.video import LiveProcessor

    model = Path(tempfile.mkdtemp(prefix="ferlib-soak-")) / "data"
    _ensure_model(model)
    path = next(model.glob("models/*/model.json"), None) or next((ROOT / "models").glob("*.json"))
    frames = [av.VideoFrame.from_ndarray(f, format="bgr24") for _, _, f in iter_video(CLIP, max_frames=20)]
    me = Sampler(os.getpid(), 1.0)
    out: dict[str, list[float]] = {}
    for name, factory in (("fresh Pipeline per stream", lambda m, s: Pipeline(m, smoothing=s)),
                          ("webapp.resources.make_pipeline (reuse)", make_pipeline)):
        out[name] = []
        for _ in range(n):
            proc = LiveProcessor(factory, str(path))
            for f in frames:
                proc.recv(f)
            proc.on_ended()
            del proc
            gc.collect()
            out[name].append(me.read().rss_mb)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="total streaming time (default 10)")
    ap.add_argument("--reopen", type=int, default=2, help="times the tab is closed and reopened (default 2)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--out", type=Path, help="report path (default benchmarks/soak-<date>.md)")
    ap.add_argument("--graph-cycles", type=int, metavar="N",
                    help="instead: N Live streams in this process without a browser, fresh vs reused Pipelines")
    args = ap.parse_args(argv)
    if args.graph_cycles:
        for name, rss in graph_cycles(args.graph_cycles).items():
            print(f"{name}: RSS after each stream (MB): {' '.join(f'{v:.0f}' for v in rss)}; "
                  f"growth after the first {rss[-1] - rss[0]:+.0f} MB")
        return 0
    out = args.out or ROOT / "benchmarks" / f"soak-{datetime.now(timezone.utc):%Y-%m-%d}.md"
    path, ok = report(run(args.minutes, args.reopen, args.interval), out)
    print(path.read_text().split("## Time series")[0])
    print(f"report: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
