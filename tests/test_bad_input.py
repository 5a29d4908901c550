"""Bad input, one table: each kind gives a clear ferlib error (type, the input's name and the reason)
or an explicit result ("no face", a working image), the process stays alive and keeps working, and
nothing already saved in the store is lost. docs/reliability.md lists the kinds."""
from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import torch

from ferlib import fsutil
from ferlib.classes import FER7
from ferlib.data import import_fer2013_csv, import_image_folder, open_zip
from ferlib.errors import FerError, InputError, ModelFileError
from ferlib.inference.checkpoint import checkpoint_paths, load_checkpoint, make_card, save_checkpoint
from ferlib.inference.pipeline import Pipeline
from ferlib.inputs import TensorSet, spec_for_model
from ferlib.io import iter_video, load_image
from ferlib.models import create_model
from ferlib.store import Store
from ferlib.training.train import TrainConfig, train
from tests.helpers import FIXTURE_CLIP

FACE_FRAME = 300  # a frame of the fixture clip with one clear, frontal face


@pytest.fixture(scope="module")
def frames(fixture_clip) -> dict[int, np.ndarray]:
    wanted = (0, 100, 200, FACE_FRAME)
    return {i: f for i, _, f in iter_video(fixture_clip, max_frames=FACE_FRAME + 1) if i in wanted}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=7)
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(m, d / "tiny", make_card(m, FER7, spec_for_model(m)))
    return d


@pytest.fixture(scope="module")
def pipe(ckpt_dir):
    with Pipeline(ckpt_dir / "tiny", mode="static") as p:
        yield p


@dataclass
class Ctx:
    tmp: Path
    store: Store
    sid: int
    frames: dict[int, np.ndarray]
    pipe: Pipeline
    ckpt: Path  # stem of a fresh copy of a valid checkpoint

    def file(self, name: str, data: bytes) -> Path:
        p = self.tmp / name
        p.write_bytes(data)
        return p

    @property
    def face(self) -> np.ndarray:
        return self.frames[FACE_FRAME]


@pytest.fixture
def ctx(tmp_path, frames, pipe, ckpt_dir) -> Ctx:
    st = Store(tmp_path / "data")
    sid = st.create_session("saved before")
    faces = pipe.extractor.process(frames[FACE_FRAME])
    st.add_sample(sid, "happy", faces[0].landmarks, crop=frames[FACE_FRAME][50:150, 300:400], pose=faces[0].pose)
    for p in checkpoint_paths(ckpt_dir / "tiny"):
        shutil.copy(p, tmp_path / p.name)
    return Ctx(tmp_path, st, sid, frames, pipe, tmp_path / "tiny")


# -- crafted inputs ------------------------------------------------------------------------------
def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def _corrupt_jpeg(img: np.ndarray) -> bytes:
    """A real JPEG whose start-of-scan header is overwritten."""
    j = bytearray(_encode(".jpg", img))
    i = j.find(b"\xff\xda")
    j[i + 4:i + 40] = b"\xff" * 36
    return bytes(j)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(w: int = 20000, h: int = 20000) -> bytes:
    """A tiny PNG whose IHDR claims w x h RGB pixels (nothing that large is ever allocated)."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _audio_only_mp4(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100)
        for i in range(4):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 44100, i * 1024
            for pk in s.encode(fr):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    return path


def _csv(ctx: Ctx, name: str, header: str, pixels: str) -> Path:
    return ctx.file(name, f"{header}\n3,{pixels},Training\n".encode())


GOOD_PIXELS = " ".join(["128"] * 48 * 48)


def _zip(ctx: Ctx, name: str, members: dict[str, bytes]) -> Path:
    p = ctx.tmp / name
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return p


def _edit_card(ctx: Ctx, **changes) -> Path:
    _, cpath = checkpoint_paths(ctx.ckpt)
    card = json.loads(cpath.read_text())
    card.update(changes)
    cpath.write_text(json.dumps(card))
    return cpath


def _tamper(ctx: Ctx) -> Path:
    wpath, _ = checkpoint_paths(ctx.ckpt)
    blob = bytearray(wpath.read_bytes())
    blob[-3] ^= 0x01  # one bit of one weight, same size
    wpath.write_bytes(bytes(blob))
    return wpath


def _pickle_as_safetensors(ctx: Ctx) -> Path:
    wpath, _ = checkpoint_paths(ctx.ckpt)
    model, _ = load_checkpoint(ctx.ckpt)
    torch.save(model.state_dict(), wpath)
    return wpath


def _mismatched_labels(ctx: Ctx):
    model = create_model("landmark_cnn1d", num_classes=3)
    pts = np.stack([ctx.store.load_landmarks(1)] * 8)
    data = TensorSet.build(spec_for_model(model), np.arange(8) % 7, pts)
    return train(model, data, data, TrainConfig(epochs=1, batch_size=4, num_threads=1))


def _classes_missing_from_data(ctx: Ctx):
    from webapp.datasets import studio_table, tensor_set

    spec = spec_for_model(create_model("landmark_cnn1d", num_classes=1))
    return tensor_set(studio_table(ctx.store, [ctx.sid]), spec, ["contempt"])


def _bad_model_name(ctx: Ctx):
    from webapp import jobs

    try:
        return jobs.start(ctx.store, jobs.TrainSpec(name="../../models/evil", session_ids=[ctx.sid]))
    finally:
        assert ctx.store.runs().empty, "no run may be recorded for a refused name"
        assert not (ctx.tmp / "models").exists() and not list((ctx.store.root / "models").iterdir())


def _record_until_disk_full(ctx: Ctx) -> list[str]:
    """The Studio's recorder stores 3 real samples, then the disk fills up while it records;
    returns the messages it queued for the page."""
    import av

    from webapp.resources import make_extractor
    from webapp.video import StudioRecorder, drain

    rec = StudioRecorder(ctx.store, make_extractor, ctx.sid, "sad", "indoor", rate_hz=1e6)
    rec.recording = True
    try:
        for _ in range(3):
            rec.recv(av.VideoFrame.from_ndarray(ctx.face, format="bgr24"))
        assert rec.saved == 3 and ctx.store.count_samples() == 4
        saved = _files(ctx.store)

        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        real = fsutil.os.fsync
        fsutil.os.fsync = no_space  # fails after the sample's bytes went into a temp file
        try:
            rec.recv(av.VideoFrame.from_ndarray(ctx.face, format="bgr24"))
        finally:
            fsutil.os.fsync = real
        assert not rec.recording, "recording must stop on a full disk"
        assert rec.saved == 3 and ctx.store.count_samples() == 4
        assert _files(ctx.store) == saved, "earlier samples intact, no partial file"
        return [m["error"] for m in drain(rec.results) if "error" in m]
    finally:
        rec.on_ended()


def _files(st: Store) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in st.root.rglob("*") if p.is_file() and p.parent.parent.name == "sessions"}


def _says_disk_full(errors: list[str], ctx: Ctx) -> None:
    assert len(errors) == 1, errors
    msg = errors[0].replace(str(ctx.tmp), "<tmp>")
    assert re.search(r"recording stopped: could not write <tmp>/data/sessions/1/\w+\.npy: "
                     r"No space left on device", msg), msg


def _many_faces(ctx: Ctx):
    f = ctx.frames
    return ctx.pipe.process(np.vstack([np.hstack([f[0], f[100]]), np.hstack([f[200], f[FACE_FRAME]])]))


def _check_many_faces(res, ctx: Ctx) -> None:
    assert len(res.predictions) == 4
    h, w = ctx.face.shape[:2]
    quadrants = {(int((p.face.box[0] + p.face.box[2]) / 2 // w), int((p.face.box[1] + p.face.box[3]) / 2 // h))
                 for p in res.predictions}
    assert quadrants == {(0, 0), (1, 0), (0, 1), (1, 1)}, "one face per tile"
    for p in res.predictions:
        assert p.probs.shape == (7,) and abs(float(p.probs.sum()) - 1) < 1e-5


def _no_face(res, ctx: Ctx) -> None:
    assert res.predictions == [], "an explicit empty result means 'no face'"


TINY = (300, 160, 343, 184)  # where _far_away puts the whole 640x360 frame: a face ~20 px high


def _far_away(face: np.ndarray) -> np.ndarray:
    """A real frame shrunk to 43x24 px inside an empty 640x360 frame: a person far from the camera."""
    x0, y0, x1, y1 = TINY
    canvas = np.full_like(face, 90)
    canvas[y0:y1, x0:x1] = cv2.resize(face, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return canvas


def _no_face_or_the_tiny_one(res, ctx: Ctx) -> None:
    """Too small to find is an explicit empty result; if found, it is that face with valid probabilities."""
    for p in res.predictions:
        cx, cy = (p.face.box[0] + p.face.box[2]) / 2, (p.face.box[1] + p.face.box[3]) / 2
        assert TINY[0] <= cx <= TINY[2] and TINY[1] <= cy <= TINY[3], p.face.box
        assert np.isfinite(p.face.landmarks).all() and abs(float(p.probs.sum()) - 1) < 1e-5
    assert len(res.predictions) <= 1


def _works_like(expected: Callable[[np.ndarray], np.ndarray], tol: int = 1) -> Callable[[Any, Ctx], None]:
    def check(img, ctx: Ctx) -> None:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        ref = expected(ctx.face)
        assert img.shape == ref.shape
        assert int(np.abs(img.astype(int) - ref.astype(int)).max()) <= tol
        faces = ctx.pipe.process(img).predictions
        assert len(faces) == 1, "the converted image must still show its face"
    return check


def _rgba(face: np.ndarray) -> bytes:
    bgra = cv2.cvtColor(face, cv2.COLOR_BGR2BGRA)
    return _encode(".png", bgra)


def _grey3(face: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    return np.repeat(g[:, :, None], 3, axis=2)


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Ctx], Any]
    error: type[FerError] | None = None  # None: the input must work, see `check`
    match: tuple[str, ...] = ()          # regexes the message must match: the input's name and the reason
    check: Callable[[Any, Ctx], None] | None = None


CASES = [
    # images
    Case("corrupt-jpeg", lambda c: load_image(c.file("photo.jpg", _corrupt_jpeg(c.face))),
         InputError, ("photo.jpg", "corrupt or truncated")),
    Case("truncated-jpeg", lambda c: load_image(c.file("cut.jpg", _encode(".jpg", c.face)[:400])),
         InputError, ("cut.jpg", "truncated|unreadable|corrupt")),
    Case("truncated-png",
         lambda c: load_image(c.file("cut.png", (lambda b: b[: len(b) // 2])(_encode(".png", c.face)))),
         InputError, ("cut.png", "truncated")),
    Case("zero-byte-file", lambda c: load_image(c.file("empty.png", b"")), InputError, ("empty.png", "zero bytes")),
    Case("huge-header-20000x20000", lambda c: load_image(c.file("huge.png", huge_png_header())),
         InputError, ("huge.png", "too large|exceeds")),
    Case("not-an-image-with-image-extension", lambda c: load_image(c.file("notes.jpg", b"Dear diary,\n" * 20)),
         InputError, ("notes.jpg", "not an image")),
    Case("missing-file", lambda c: load_image(c.tmp / "nowhere.png"), InputError, ("nowhere.png", "no such file")),
    Case("folder-named-like-an-image", lambda c: load_image((c.tmp / "dir.jpg").mkdir() or c.tmp / "dir.jpg"),
         InputError, ("dir.jpg", "not a regular file")),
    Case("rgba-png-works", lambda c: load_image(c.file("rgba.png", _rgba(c.face))), check=_works_like(lambda f: f)),
    Case("16-bit-png-works", lambda c: load_image(c.file("deep.png", _encode(".png", c.face.astype(np.uint16) * 257))),
         check=_works_like(lambda f: f)),
    Case("greyscale-png-works", lambda c: load_image(c.file("grey.png", _encode(".png", cv2.cvtColor(
        c.face, cv2.COLOR_BGR2GRAY)))), check=_works_like(_grey3)),
    # videos
    Case("empty-video", lambda c: list(iter_video(c.file("empty.mp4", b""))), InputError, ("empty.mp4", "zero bytes")),
    Case("video-without-video-stream", lambda c: list(iter_video(_audio_only_mp4(c.tmp / "sound.mp4"))),
         InputError, ("sound.mp4", "no video stream")),
    Case("garbage-video", lambda c: list(iter_video(c.file("noise.mp4", np.random.default_rng(0).bytes(20000)))),
         InputError, ("noise.mp4", "cannot open")),
    Case("truncated-video", lambda c: list(iter_video(c.file("cut.mp4", FIXTURE_CLIP.read_bytes()[:3000]))),
         InputError, ("cut.mp4", "cannot open")),
    # frames
    Case("frame-without-face", lambda c: c.pipe.process(cv2.resize(c.face[:, :280], (640, 360))), check=_no_face),
    Case("many-faces", _many_faces, check=_check_many_faces),
    Case("tiny-face", lambda c: c.pipe.process(_far_away(c.face)), check=_no_face_or_the_tiny_one),
    Case("malformed-frame-array", lambda c: c.pipe.process(np.zeros((360, 640, 2), np.uint8)),
         InputError, ("frame", r"shape \(360, 640, 2\)")),
    # datasets
    Case("fer2013-csv-wrong-header", lambda c: import_fer2013_csv(_csv(c, "hdr.csv", "label,img,split", GOOD_PIXELS)),
         InputError, ("hdr.csv", "line 1", "header")),
    Case("fer2013-csv-non-numeric-pixels", lambda c: import_fer2013_csv(
        _csv(c, "px.csv", "emotion,pixels,Usage", GOOD_PIXELS[:-3] + "abc")),
         InputError, ("px.csv", "line 2", "not space-separated integers")),
    Case("fer2013-csv-wrong-pixel-count", lambda c: import_fer2013_csv(
        _csv(c, "short.csv", "emotion,pixels,Usage", "1 2 3")),
         InputError, ("short.csv", "line 2", "2304 pixel values")),
    Case("fer2013-csv-pixel-out-of-range", lambda c: import_fer2013_csv(
        _csv(c, "range.csv", "emotion,pixels,Usage", GOOD_PIXELS[:-3] + "999")), InputError, ("range.csv", "0-255")),
    Case("fer2013-csv-binary", lambda c: import_fer2013_csv(c.file("bin.csv", b"\xff\xfe\x00\x81garbage")),
         InputError, ("bin.csv", "not a UTF-8 text csv")),
    Case("zip-with-dotdot-paths", lambda c: import_image_folder(_zip(c, "slip.zip", {
        "happy/ok.png": _encode(".png", c.face), "../../evil/happy/x.png": b"x"})),
         InputError, ("slip.zip", "unsafe member path", r"\.\./\.\./evil")),
    Case("zip-with-absolute-path", lambda c: open_zip(_zip(c, "abs.zip", {"/etc/happy.png": b"x"})),
         InputError, ("abs.zip", "unsafe member path")),
    Case("zip-bomb", lambda c: import_image_folder(_zip(c, "bomb.zip", {"happy/a.png": b"\0" * (4 << 20)})),
         InputError, ("bomb.zip", "zip bomb", r"expands \d+x")),
    Case("not-a-zip", lambda c: open_zip(c.file("fake.zip", b"PK\x03\x04 not really")),
         InputError, ("fake.zip", "not a readable zip")),
    # model files
    Case("model-from-another-version", lambda c: load_checkpoint(_edit_card(c, version=2)),
         ModelFileError, ("tiny.json", "version 2 is not supported")),
    Case("model-for-unknown-architecture", lambda c: load_checkpoint(
        _edit_card(c, model={"name": "transformer_xl", "kwargs": {}})), ModelFileError, ("tiny.json", "unknown model")),
    Case("tampered-weights", lambda c: load_checkpoint(_tamper(c) and c.ckpt),
         ModelFileError, ("tiny.safetensors", "does not match", "tampered")),
    Case("pickle-renamed-safetensors", lambda c: Pipeline(_pickle_as_safetensors(c)),
         ModelFileError, ("tiny.safetensors", "pickle", "never unpickles")),
    Case("card-class-list-vs-model", lambda c: load_checkpoint(_edit_card(c, classes=list(FER7[:6]))),
         ModelFileError, ("tiny.json", "6 names", "7 outputs")),
    Case("class-list-vs-training-data", _mismatched_labels,
         InputError, ("training labels", "3 classes", "does not match the data")),
    Case("classes-absent-from-recordings", _classes_missing_from_data, InputError, (r"\['contempt'\]", "no samples")),
    # names
    Case("session-name-with-separator", lambda c: c.store.create_session("../../etc"),
         InputError, (r"'\.\./\.\./etc'", "path separator")),
    Case("session-name-with-control-char", lambda c: c.store.create_session("me\x1b[31m"),
         InputError, (r"me\\x1b", "control character")),
    Case("model-name-with-backslash", lambda c: c.store.model_dir("a\\b"), InputError, (r"a\\\\b", "path separator")),
    Case("model-name-with-separator-via-train-job", _bad_model_name, InputError, ("evil", "path separator")),
    # storage
    Case("full-disk-while-recording", _record_until_disk_full, check=_says_disk_full),
]


def _snapshot(st: Store) -> dict[int, tuple[str, str | None]]:
    out = {}
    for r in st.samples().itertuples():
        files = [st.path_of(p).read_bytes() if isinstance(p, str) else None for p in (r.landmarks_path, r.crop_path)]
        out[int(r.id)] = tuple(hashlib.sha256(b).hexdigest() if b is not None else None for b in files)
    return out


def test_at_least_twenty_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, ctx: Ctx):
    before = _snapshot(ctx.store)
    if case.error is None:
        case.check(case.run(ctx), ctx)
    else:
        with pytest.raises(FerError) as info:
            case.run(ctx)
        assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
        msg = str(info.value).replace(str(ctx.tmp), "<tmp>")  # the reason must not come from the folder name
        for pattern in case.match:
            assert re.search(pattern, msg), f"message {msg!r} lacks {pattern!r}"
    # nothing already saved was lost, the catalogue is consistent, nothing half-written remains
    after = _snapshot(ctx.store)
    assert {k: after.get(k) for k in before} == before
    assert ctx.store.check().clean
    assert not [p for p in ctx.store.root.rglob("*") if p.name.endswith(".tmp")]
    # the process is alive and still works on good input
    assert len(ctx.pipe.process(ctx.face).predictions) == 1
    assert load_image(_encode(".png", ctx.face)).shape == ctx.face.shape
