"""ferlib.io: every supported image flavour becomes BGR uint8; bad input is a clear InputError."""
from __future__ import annotations

import io
import struct
import threading
import zlib

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ferlib.errors import InputError
from ferlib.inference.pipeline import Pipeline
from ferlib.inference.predict import predict, result_rows
from ferlib.io import ensure_bgr, is_video, iter_images, iter_video, load_image, prefetch


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_colour_png_and_jpeg_are_bgr(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red
    p = tmp_path / "red.png"
    Image.fromarray(rgb).save(p)
    out = load_image(p)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert (out[..., 2] == 200).all() and (out[..., :2] == 0).all()
    j = tmp_path / "red.jpg"
    Image.fromarray(rgb).save(j, quality=95)
    assert abs(int(load_image(str(j))[..., 2].mean()) - 200) < 4


def test_greyscale_rgba_palette_16bit_tiff(tmp_path):
    grey = Image.fromarray(np.full((8, 9), 77, np.uint8), "L")
    assert (load_image(_png_bytes(grey)) == 77).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[:2, ..., 3] = 255  # top half opaque green, bottom transparent -> white
    out = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert (out[:2] == (0, 255, 0)).all() and (out[2:] == 255).all()
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "L").convert("P")
    assert load_image(_png_bytes(pal)).shape == (4, 4, 3)
    sixteen = Image.fromarray(np.full((5, 6), 65535 // 2, np.uint16))
    out = load_image(_png_bytes(sixteen))
    assert out.shape == (5, 6, 3) and abs(int(out[0, 0, 0]) - 128) <= 1
    t = tmp_path / "x16.tif"
    sixteen.save(t)
    assert abs(int(load_image(t)[0, 0, 1]) - 128) <= 1
    t8 = tmp_path / "c.tiff"
    Image.fromarray(np.full((3, 3, 3), 9, np.uint8)).save(t8)
    assert (load_image(t8) == 9).all()


def test_bad_files_raise_input_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("definitely not an image")
    whole = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    whole.save(buf, format="JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[:200])
    for path, reason in [(empty, "empty"), (text, "not an image"), (trunc, "trunc.jpg"),
                         (tmp_path / "missing.png", "no such file"), (tmp_path, "not a regular file")]:
        with pytest.raises(InputError, match=reason) as e:
            load_image(path)
        assert str(path) in str(e.value)
    with pytest.raises(InputError, match="empty"):
        load_image(b"")
    with pytest.raises(InputError, match="path or bytes"):
        load_image(12)


@pytest.mark.parametrize("w,h", [(40000, 40000), (17000, 10), (10000, 10001)])
def test_absurd_dimensions_refused_from_header(w, h):
    png = bytearray(_png_bytes(Image.new("L", (1, 1))))  # a 1x1 PNG whose header claims w x h
    ihdr = struct.pack(">II", w, h) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with pytest.raises(InputError, match="too large|exceeds the limit"):
        load_image(bytes(png))


def test_ensure_bgr_shapes_and_rgb_flag():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    assert (ensure_bgr(rgb, rgb=True)[..., 2] == 255).all()
    assert ensure_bgr(np.ones((2, 2), np.float32)).max() == 255
    for bad in (np.zeros((2, 2, 2), np.uint8), np.zeros((0, 3, 3), np.uint8), [[1, 2]]):
        with pytest.raises(InputError):
            ensure_bgr(bad)


def test_iter_video_frames_and_timestamps(fixture_clip):
    frames = list(iter_video(fixture_clip, max_frames=5))
    assert [i for i, _, _ in frames] == list(range(5))
    ts = [t for _, t, _ in frames]
    assert ts[0] == pytest.approx(0.0, abs=1.0) and np.allclose(np.diff(ts), 1000 / 23.976, atol=1.0)
    assert frames[0][2].shape == (360, 640, 3) and frames[0][2].dtype == np.uint8
    assert is_video(fixture_clip) and not is_video("a.png")


def test_bad_videos_raise_input_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    noframes = tmp_path / "noframes.mp4"
    with av.open(str(noframes), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    for p in (empty, junk, noframes, tmp_path / "missing.mp4"):
        with pytest.raises(InputError) as e:
            list(iter_video(p))
        assert p.name in str(e.value)


def test_iter_images_recursive_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.png", "a.jpg", "b/1.tif", "skip.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_images(tmp_path)] == ["a.jpg", "b/1.tif", "b/2.png"]
    with pytest.raises(InputError):
        list(iter_images(tmp_path / "nope"))


def test_prefetch_keeps_order_raises_where_the_producer_failed_and_stops_when_closed():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise InputError("video x: decoding failed after 2 frames")

    got = []
    with pytest.raises(InputError, match="after 2 frames"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1, 2]

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = prefetch(endless(), depth=2)
    assert next(it) == 0
    it.close()
    assert closed.wait(5), "closing the consumer closes the producer's iterator"
    assert not [t for t in threading.enumerate() if t.name == "ferlib-prefetch"]


def test_predict_on_a_video_matches_frame_by_frame_processing(fixture_clip):
    """predict's pipelined video path (decoding and finding faces in threads ahead of classifying,
    Pipeline.stream) gives the rows of processing frame by frame in one thread."""
    pipe = Pipeline("landmark_cnn1d_fer2013_affectnet")
    report = predict([fixture_clip], pipe, max_frames=40)
    pipe.reset()
    pipe.extractor.mode = "video"
    rows = []
    for idx, ts, bgr in iter_video(fixture_clip, max_frames=40):
        rows += result_rows(str(fixture_clip), idx, pipe.process(bgr, ts, idx), pipe.classes)
    assert len(report.table) == len(rows) == 40
    expected = pd.DataFrame(rows, columns=report.table.columns).astype(report.table.dtypes.to_dict())
    pd.testing.assert_frame_equal(report.table, expected, check_exact=False, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["landmark_cnn1d_fer2013_affectnet", "resnet18_attention_fer2013_long"])
def test_pipeline_stream_equals_process_and_stops_when_closed(fixture_clip, model):
    frames = list(iter_video(fixture_clip, max_frames=24))
    with Pipeline(model) as pipe:
        one_by_one = [pipe.process(bgr, ts, idx) for idx, ts, bgr in frames]
        pipe.reset()
        streamed = list(pipe.stream(iter(frames)))
        assert [r.frame_index for r in streamed] == list(range(24))
        for a, b in zip(one_by_one, streamed):
            assert [p.face.face_id for p in a.predictions] == [p.face.face_id for p in b.predictions]
            assert [p.face.box for p in a.predictions] == [p.face.box for p in b.predictions]
            assert [p.face.pose for p in a.predictions] == [p.face.pose for p in b.predictions]
            assert all(p.face.pose is not None for p in b.predictions if p.face.landmarks is not None)
            for pa, pb in zip(a.predictions, b.predictions):
                np.testing.assert_allclose(pa.probs, pb.probs, atol=1e-6)
            assert set(b.timings_ms) >= {"landmarks", "prepare", "model", "total"}

        pipe.reset()  # closing a stream part-way stops its thread; the pipeline goes on
        it = pipe.stream(iter(frames))
        assert next(it).frame_index == 0
        it.close()
        assert not [t for t in threading.enumerate() if t.name == "ferlib-prefetch"]
        pipe.reset()
        assert [r.frame_index for r in pipe.stream(iter(frames[:3]))] == [0, 1, 2]


def test_pipeline_stream_raises_a_bad_frame_in_order(fixture_clip):
    frames = list(iter_video(fixture_clip, max_frames=3))
    bad = [*frames[:2], (2, 66.0, np.zeros((4, 4, 5), np.uint8))]
    got = []
    with Pipeline("landmark_cnn1d_fer2013_affectnet") as pipe:
        with pytest.raises(InputError, match="frame"):
            for r in pipe.stream(iter(bad)):
                got.append(r.frame_index)
    assert got == [0, 1]
