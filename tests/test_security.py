"""Security and privacy defaults: local-only server settings, no pickles, no network, deletion that
deletes, landmarks-only sessions without pixels, hostile names refused."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ferlib.classes import FER7
from ferlib.errors import InputError, ModelFileError
from ferlib.inference.checkpoint import load_checkpoint, make_card, save_checkpoint
from ferlib.inputs import spec_for_model
from ferlib.io import iter_video
from ferlib.models import create_model
from ferlib.store import Store
from tests.helpers import FIXTURE_CLIP, ROOT

APP_SOURCES = sorted([*ROOT.glob("ferlib/**/*.py"), *ROOT.glob("webapp/**/*.py"), *ROOT.glob("pages/*.py"),
                      ROOT / "app.py"])
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def _run(code: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


# -- server configuration ------------------------------------------------------------------------
def test_config_file_is_local_and_private():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert 1 <= cfg["server"]["maxUploadSize"] <= 200
    assert cfg["browser"]["gatherUsageStats"] is False


def test_streamlit_reads_those_settings():
    """Streamlit itself, started from the repo root, sees the settings (the option names are right)."""
    r = _run("from streamlit import config\n"
             "config.get_config_options(force_reparse=True)\n"
             "print(repr([config.get_option(k) for k in ('server.address', 'server.enableXsrfProtection', "
             "'server.maxUploadSize', 'browser.gatherUsageStats')]))")
    assert r.returncode == 0, r.stderr
    address, xsrf, upload, stats = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert (address, xsrf, stats) == ("127.0.0.1", True, False) and 1 <= upload <= 200


def test_every_upload_widget_limits_file_types():
    for src in APP_SOURCES:
        for node in ast.walk(ast.parse(src.read_text(), str(src))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "file_uploader":
                assert any(k.arg == "type" for k in node.keywords), f"{src}:{node.lineno}: file_uploader without type="


# -- model files ---------------------------------------------------------------------------------
class _Evil:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["pickle-protocol-4", "pickle-protocol-0", "torch-save-zip"])
def test_malicious_pickle_checkpoint_is_never_unpickled(tmp_path, kind):
    from ferlib.inference.pipeline import Pipeline

    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=7)
    wpath, cpath = save_checkpoint(m, tmp_path / "model", make_card(m, FER7, spec_for_model(m)))
    marker = tmp_path / "pwned"
    if kind == "torch-save-zip":
        torch.save({"state": _Evil(marker)}, wpath)
    else:
        wpath.write_bytes(pickle.dumps({"state": _Evil(marker)}, protocol=int(kind[-1])))
    card = json.loads(cpath.read_text())
    card["weights_sha256"] = hashlib.sha256(wpath.read_bytes()).hexdigest()  # even a matching hash does not help
    cpath.write_text(json.dumps(card))
    for load in (load_checkpoint, Pipeline):
        with pytest.raises(ModelFileError, match=re.escape(str(wpath))):
            load(wpath)
    assert not marker.exists(), "the pickle was executed"


def test_no_unsafe_deserialisation_in_the_sources():
    bad = re.compile(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False"
                     r"|\btorch\.load\((?![^)]*weights_only\s*=\s*True)")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in APP_SOURCES
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert not hits, f"unsafe deserialisation: {hits}"


# -- no streamlit in ferlib, no network --------------------------------------------------------
def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.slow
def test_ferlib_never_imports_streamlit():
    for p in ROOT.glob("ferlib/**/*.py"):
        assert not {m for m in _imports(p) if m.split(".")[0] in ("streamlit", "streamlit_webrtc")}, p
    mods = sorted("ferlib." + ".".join(p.relative_to(ROOT / "ferlib").with_suffix("").parts)
                  for p in ROOT.glob("ferlib/**/*.py") if p.name not in ("__init__.py", "__main__.py"))
    r = _run(f"import importlib, sys\nfor m in {mods!r}: importlib.import_module(m)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'streamlit_webrtc')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


NETWORK_MODULES = {"socket", "ssl", "urllib.request", "http.client", "requests", "httpx", "aiohttp", "urllib3",
                   "websocket", "websockets", "smtplib", "ftplib", "telnetlib", "xmlrpc.client"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "[::1]"}
# Network modules a source may import, each for what a user asks for by name (one module per file).
NETWORK_ALLOWED = {
    "ferlib/scale/cluster.py": ("socket", "`--engine ray --address HOST:PORT`: a 5 s reachability check of the "
                                          "cluster the user names (ray.init would retry for minutes); the default "
                                          "local cluster binds 127.0.0.1 (tests/test_scale.py)"),
    "ferlib/scale/predict.py": ("socket", "a worker's host name in its shard (socket.gethostname; no connection)"),
}
EXAMPLE_ICE = {"host", "stun.example.org", "turn.example.org"}  # documented placeholders only


def test_sources_contact_no_remote_host():
    found = []
    for p in [*APP_SOURCES, ROOT / ".streamlit" / "config.toml"]:
        text = p.read_text()
        for host in re.findall(r"\b(?:https?|wss?|ftp)://([^/\s\"'`<>):]+)", text):
            if host.lower() not in LOCAL_HOSTS:
                found.append(f"{p.relative_to(ROOT)}: {host}")
        for host in re.findall(r"\b(?:stun|turn)s?:(?!//)([A-Za-z0-9.\-]+)", text):
            if host.lower() not in EXAMPLE_ICE:
                found.append(f"{p.relative_to(ROOT)}: ICE server {host}")
        if re.search(r"analytics|telemetry|sentry|mixpanel|segment\.io|posthog", text, re.I):
            found.append(f"{p.relative_to(ROOT)}: telemetry reference")
        if p.suffix == ".py":
            allowed = NETWORK_ALLOWED.get(str(p.relative_to(ROOT)), ("", ""))[0]
            found += [f"{p.relative_to(ROOT)}: imports {m}" for m in _imports(p) if m in NETWORK_MODULES
                      and m != allowed]
    assert not found, found


AUDIT = r"""
import sys, socket
events = []
def hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.getaddrinfo", "urllib.Request", "http.client.connect"):
        events.append((event, repr(args[1:] if event.startswith("socket.") else args)[:200]))
sys.addaudithook(hook)
import numpy as np, torch
torch.set_num_threads(1)
from ferlib.inference.checkpoint import make_card, save_checkpoint
from ferlib.classes import FER7
from ferlib.inputs import TensorSet, spec_for_model
from ferlib.io import iter_video
from ferlib.models import create_model
from ferlib.inference.pipeline import Pipeline
from ferlib.store import Store
from ferlib.training.train import TrainConfig, train
import webapp.video, webapp.resources, webapp.jobs, webapp.datasets, webapp.figures
m = create_model("landmark_cnn1d", num_classes=7)
save_checkpoint(m, sys.argv[2] + "/m", make_card(m, FER7, spec_for_model(m)))
st = Store(sys.argv[2] + "/data")
sid = st.create_session("net")
with Pipeline(sys.argv[2] + "/m") as pipe:
    for i, ts, bgr in iter_video(sys.argv[1], max_frames=3):
        for p in pipe.process(bgr, ts).predictions:
            st.add_sample(sid, p.label, p.face.landmarks, crop=bgr[:64, :64])
pts, df = st.landmark_arrays()
data = TensorSet.build(spec_for_model(m), np.arange(len(pts)) % 7, pts)
train(m, data, data, TrainConfig(epochs=1, batch_size=2, num_threads=1))
remote = [e for e in events if not any(h in e[1] for h in ("127.0.0.1", "localhost", "'::1'", "AF_UNIX"))]
print("EVENTS", len(events), "REMOTE", remote)
try:  # control: the hook does see a connection attempt (TEST-NET-1, never routed)
    socket.create_connection(("192.0.2.1", 9), timeout=0.01)
except OSError:
    pass
print("CONTROL", [e[0] for e in events])
"""


@pytest.mark.slow
def test_nothing_is_sent_anywhere(tmp_path):
    """An audit hook sees every socket: running the pipeline, the store and training opens none."""
    r = _run(AUDIT.replace("sys.argv[1]", repr(str(FIXTURE_CLIP))).replace("sys.argv[2]", repr(str(tmp_path))))
    assert r.returncode == 0, r.stderr[-2000:]
    *_, result, control = r.stdout.strip().splitlines()
    assert result == "EVENTS 0 REMOTE []", result
    assert "socket.connect" in control, control


# -- privacy of recordings -----------------------------------------------------------------------
def _record(st: Store, sid: int, frames: list[np.ndarray]) -> int:
    """Record frames through the Studio page's recorder; returns the number of samples saved."""
    from webapp.resources import make_extractor
    from webapp.video import StudioRecorder

    rec = StudioRecorder(st, make_extractor, sid, "happy", "indoor", rate_hz=1e6)
    rec.recording = True
    try:
        for f in frames:
            rec.recv(av.VideoFrame.from_ndarray(f, format="bgr24"))
    finally:
        rec.on_ended()
    return rec.saved


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return [f for i, _, f in iter_video(FIXTURE_CLIP, max_frames=320) if i in (280, 300, 319)]


def _pixel_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.read_bytes()[:4].startswith(IMAGE_MAGIC)]


def test_landmarks_only_mode_stores_no_pixels(tmp_path, faces):
    st = Store(tmp_path / "data")
    sid = st.create_session("private", landmarks_only=True)
    assert _record(st, sid, faces) == len(faces)
    crop_paths = [r[0] for r in st._conn().execute("SELECT crop_path FROM samples WHERE session_id = ?", (sid,))]
    assert crop_paths == [None] * len(faces)
    assert not _pixel_files(st.root), "no image file anywhere in the data folder"
    assert {p.suffix for p in st.session_dir(sid).iterdir()} == {".npy"}
    out = st.export_zip([sid], tmp_path / "export.zip")
    import zipfile

    with zipfile.ZipFile(out) as z:
        assert not [n for n in z.namelist() if z.read(n)[:4].startswith(IMAGE_MAGIC)]


def test_deleting_a_session_removes_its_files_and_rows(tmp_path, faces):
    st = Store(tmp_path / "data")
    keep, gone = st.create_session("keep"), st.create_session("forget me")
    _record(st, keep, faces[:1])
    assert _record(st, gone, faces) == len(faces)
    gone_files = [p for p in st.session_dir(gone).iterdir()]
    assert len(gone_files) == 2 * len(faces) and _pixel_files(st.session_dir(gone))
    st.delete_session(gone)
    c = st._conn()
    assert c.execute("SELECT COUNT(*) FROM samples WHERE session_id = ?", (gone,)).fetchone()[0] == 0
    assert c.execute("SELECT COUNT(*) FROM sessions WHERE id = ?", (gone,)).fetchone()[0] == 0
    assert not st.session_dir(gone).exists() and not any(p.exists() for p in gone_files)
    assert st.count_samples(keep) == 1 and len(list(st.session_dir(keep).iterdir())) == 2
    assert st.check().clean


HOSTILE_NAMES = ["../../outside", "/etc/passwd", "a/b", "a\\b", "..", "bell\x07", "new\nline", "nul\x00byte",
                 "esc\x1b[2J", "del\x7f"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_with_separators_or_control_characters_are_refused(tmp_path, name):
    from webapp import jobs

    st = Store(tmp_path / "data")
    tree = sorted(tmp_path.rglob("*"))
    f = tmp_path / "data" / "x.safetensors"
    for call in (lambda: st.create_session(name), lambda: st.model_dir(name), lambda: st.start_run(name, {}),
                 lambda: st.add_model(name, f, {}),
                 lambda: jobs.start(st, jobs.TrainSpec(name=name, session_ids=[]))):
        with pytest.raises(InputError, match="separator|control|letters, digits"):
            call()
    assert sorted(tmp_path.rglob("*")) == tree, "nothing was created"
    assert st.sessions().empty and st.runs().empty and st.models().empty
