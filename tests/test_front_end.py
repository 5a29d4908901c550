"""The face front end on real faces (the committed Pexels clip): every cascade step, faces kept
without landmarks, the `path` column, image models without face mesh, and bad input."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from ferlib.errors import InputError, ModelFileError
from ferlib.faces.crops import face_crop
from ferlib.faces.landmarks import LandmarkExtractor
from ferlib.inference.pipeline import Pipeline, shipped_fallback_model
from ferlib.inference.predict import columns_for, predict
from ferlib.io import iter_video
from tests.helpers import ROOT

IMAGE_MODEL = ROOT / "models" / "image_cnn_fer2013"
LANDMARK_MODEL = ROOT / "models" / "landmark_cnn1d_fer2013"


@pytest.fixture(scope="module")
def frames(fixture_clip):
    return {i: bgr for i, _, bgr in iter_video(fixture_clip) if i in (0, 120, 240, 360, 460)}


@pytest.fixture(scope="module")
def boxes(frames):
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        return {i: ex.process(bgr)[0].box for i, bgr in frames.items()}


def covered(bgr, box):
    """The upper 60 % of the face covered by a skin-coloured patch (a hand over the face): BlazeFace
    still finds the face, face mesh does not read it (measured on frames 0 and 240)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    out = bgr.copy()
    cv2.rectangle(out, (x0 - 10, y0), (x1 + 10, y0 + int(0.6 * (y1 - y0))), (60, 90, 150), -1)
    return out


@pytest.mark.parametrize("side", [350, 48])
def test_tight_crop_is_found(frames, boxes, side):
    """A crop that the face fills, 350 px (an aligned dataset crop) and 48 px (FER2013-like)."""
    x0, y0, x1, y1 = (int(v) for v in boxes[0])
    tight = cv2.resize(frames[0][y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA)
    with LandmarkExtractor(mode="static") as ex:
        faces = ex.process(tight)
        stages = [d.stage for d in ex._detector.detect(tight)]
    assert len(faces) == 1 and faces[0].path == "mesh" and faces[0].score > 0
    if side == 48:
        assert stages == ["short"]  # small images go straight to the short-range stage


def test_a_noisy_small_face_is_found_on_the_smoothed_copy(frames, boxes):
    """A 48 px face crop with strong pixel noise (like FER2013's JPEG/halftone noise, upscaled): the
    short-range stage misses it, the smoothed retry finds it; plain noise stays without a face."""
    from ferlib.faces.detection import FaceDetector, upscale_pad

    rng = np.random.default_rng(0)
    det = FaceDetector(max_faces=1)
    try:
        for i in (0, 240, 460):
            x0, y0, x1, y1 = (int(v) for v in boxes[i])
            g = cv2.cvtColor(cv2.resize(frames[i][y0:y1, x0:x1], (48, 48), interpolation=cv2.INTER_AREA),
                             cv2.COLOR_BGR2GRAY)
            noisy = cv2.cvtColor(np.clip(g + rng.normal(0, 40, g.shape), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            assert [d.stage for d in det.detect(noisy)] == ["short-smoothed"], i
            assert not det.detect_scaled(upscale_pad(noisy))  # the plain short-range stage misses it
        noise = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
        assert det.detect(noise) == []
    finally:
        det.close()
    with LandmarkExtractor(mode="static") as ex:  # the whole front end keeps it, with its box
        faces = ex.process(noisy)
    assert len(faces) == 1


def test_group_photo_keeps_every_face(frames):
    """Five faces in a group photo (the faces of five clip frames, 3 + 2 on a 600x400 grid)."""
    group = np.full((400, 600, 3), 90, np.uint8)
    with LandmarkExtractor(mode="static", max_faces=1) as ex:
        for k, i in enumerate(sorted(frames)):
            x0, y0, x1, y1 = (int(v) for v in ex.process(frames[i])[0].box)
            cx, cy, half = (x0 + x1) // 2, (y0 + y1) // 2, int(0.9 * max(x1 - x0, y1 - y0))
            face = frames[i][max(0, cy - half):cy + half, max(0, cx - half):cx + half]
            r, c = divmod(k, 3)
            group[r * 200:(r + 1) * 200, c * 200:(c + 1) * 200] = cv2.resize(face, (200, 200))
    with LandmarkExtractor(mode="static") as ex:
        faces = ex.process(group)
    assert len(faces) == 5 and [f.face_id for f in faces] == [0, 1, 2, 3, 4]
    assert all(f.path == "mesh" for f in faces)


def test_face_mesh_failure_keeps_the_face(frames, boxes):
    img = covered(frames[0], boxes[0])
    with LandmarkExtractor(mode="static") as ex:
        faces = ex.process(img)
    assert len(faces) == 1 and faces[0].path == "box" and faces[0].landmarks is None and faces[0].pose is None
    assert faces[0].score > 0.5
    with LandmarkExtractor(mode="static", keep_unmeshed=False) as ex:  # the dataset cache's setting
        assert all(f.landmarks is not None for f in ex.process(img))  # dropped, or the whole image meshed


def test_video_tracking_keeps_a_face_mesh_cannot_read(fixture_clip, frames, boxes):
    """Video mode: a face face mesh cannot read is kept (box) and the detector runs on each frame
    until face mesh reads it again."""
    with LandmarkExtractor(mode="video") as ex:
        calls, detect = [0], ex._detector.detect

        def counted(*a, **kw):
            calls[0] += 1
            return detect(*a, **kw)

        ex._detector.detect = counted
        hidden = [ex.process(covered(frames[0], boxes[0]), t) for t in (0.0, 40.0)]
        seen = [ex.process(frames[0], t) for t in (80.0, 120.0, 160.0)]
    assert [[f.path for f in fs] for fs in hidden + seen] == [["box"], ["box"], ["mesh"], ["mesh"], ["mesh"]]
    assert len({fs[0].face_id for fs in hidden + seen}) == 1
    assert calls[0] == 3  # every frame while the face had no landmarks, then the tracking mesh alone


def test_image_model_runs_no_face_mesh(frames):
    with Pipeline(IMAGE_MODEL, mode="static") as pipe:
        assert pipe.needs_mesh is False and pipe.extractor.mesh is False
        res = pipe.process(frames[120])
        assert [p.path for p in res.predictions] == ["box"]
        assert pipe.extractor._mesher is None  # never built: box -> crop -> model
    with Pipeline(IMAGE_MODEL, mode="static", mesh=True) as pipe:  # asked for
        assert [p.path for p in pipe.process(frames[120]).predictions] == ["mesh"]
    with Pipeline(IMAGE_MODEL, mode="video") as pipe:  # the Live overlay turned on mid-stream
        plain = pipe.process(frames[120], 0.0).predictions
        assert [p.path for p in plain] == ["box"] and plain[0].face.pose is None
        pipe.set_overlay_mesh(True)
        res = pipe.process(frames[120], 40.0)
        assert [p.path for p in res.predictions] == ["box"]  # what reached the model
        assert res.predictions[0].face.landmarks is not None and res.predictions[0].face.pose is not None
        assert not pipe.extractor.tracking and res.timings_ms["overlay_mesh"] > 0
        # meshed after the model read the face: the same crop of the same detector box, the same output
        assert res.predictions[0].face.box == plain[0].face.box
        np.testing.assert_allclose(res.predictions[0].probs, plain[0].probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", [None, IMAGE_MODEL], ids=["default", "image_cnn"])
def test_live_overlay_leaves_the_models_input_as_predicts(fixture_clip, model):
    """The face-mesh overlay only draws: an image model reads the same crops of a video with it as without
    it (as `predict` does). It used to switch the extractor to the tracking mesh, whose boxes are the
    landmarks' (15 % narrower than the detector's): the default then changed its label on 12 % of the
    clip's frames."""
    clip = list(iter_video(fixture_clip, max_frames=40))
    outputs = []
    for overlay in (False, True):
        with Pipeline(model, mode="video") as pipe:
            pipe.set_overlay_mesh(overlay)
            outputs.append([pipe.process(bgr, ts, i).predictions for i, ts, bgr in clip])
    plain, drawn = outputs
    assert all(len(a) == len(b) == 1 for a, b in zip(plain, drawn))
    assert all(b[0].face.landmarks is not None for b in drawn)  # every face drawn with its mesh
    for a, b in zip(plain, drawn):
        assert a[0].face.box == b[0].face.box
        np.testing.assert_allclose(a[0].probs, b[0].probs, rtol=1e-5, atol=1e-6)


def test_studio_crop_is_framed_on_the_detector_box(frames):
    """The Studio stores a sample's crop framed as Live and `predict` frame it for image models: on the
    detector's box, not on the tracking mesh's landmark box."""
    from webapp.video import STUDIO_CROP_SIZE, studio_crop

    with LandmarkExtractor(mode="static", mesh=False) as plain:
        (found,) = plain.process(frames[120])
    with LandmarkExtractor(mode="video", max_faces=1, keep_unmeshed=False) as ex:  # as webapp.resources makes it
        ex.process(frames[120], 0.0)
        (face,) = ex.process(frames[120], 40.0)
        assert ex.tracking and face.landmarks is not None and face.box != found.box  # the landmarks' box
        assert ex.detector_box(frames[120], face) == found.box
        crop = studio_crop(ex, frames[120], face)
    assert crop.shape == (STUDIO_CROP_SIZE, STUDIO_CROP_SIZE, 3)
    np.testing.assert_array_equal(crop, face_crop(frames[120], found, size=STUDIO_CROP_SIZE, grey=False))
    assert not np.array_equal(crop, face_crop(frames[120], face, size=STUDIO_CROP_SIZE, grey=False))


@pytest.mark.skipif(shipped_fallback_model() is None, reason="the shipped fallback image model is absent")
def test_image_model_video_detects_every_other_frame(fixture_clip):
    """mesh=False in video mode: the detector runs on every box_every-th frame; the frames between
    keep the last boxes and ids; a reset or a new frame size detects at once; stills detect always."""
    frames = {i: bgr for i, _, bgr in iter_video(fixture_clip, max_frames=110) if i >= 100}
    ex = LandmarkExtractor(mode="video", mesh=False)
    calls = []
    detect = ex._detector.detect
    ex._detector.detect = lambda img: calls.append(img.shape) or detect(img)
    out = [ex.process(frames[i], 40.0 * k) for k, i in enumerate(range(100, 106))]
    assert len(calls) == 3 and all(len(fs) == 1 for fs in out)
    assert out[1][0].box == out[0][0].box and out[1][0].face_id == out[0][0].face_id
    assert out[2][0].box != out[0][0].box  # detected again: the face moved
    ex.process(cv2.resize(frames[106], (480, 270)), 400.0)  # a new frame size
    assert len(calls) == 4
    ex.reset()
    ex.process(frames[107], 0.0)
    assert len(calls) == 5
    ex.mode = "static"
    for i in (108, 109):
        ex.process(frames[i])
    assert len(calls) == 7
    ex.close()
    every = LandmarkExtractor(mode="video", mesh=False, box_every=1)
    calls.clear()
    detect1 = every._detector.detect
    every._detector.detect = lambda img: calls.append(img.shape) or detect1(img)
    for k, i in enumerate(range(100, 104)):
        every.process(frames[i], 40.0 * k)
    assert len(calls) == 4
    every.close()
    with pytest.raises(InputError, match="box_every"):
        LandmarkExtractor(box_every=0)


def test_landmark_model_falls_back_to_the_image_model(frames, boxes):
    img = covered(frames[240], boxes[240])
    with Pipeline(LANDMARK_MODEL, mode="static") as pipe:
        assert pipe.fallback is not None
        mesh = pipe.process(frames[240]).predictions
        box = pipe.process(img).predictions
    assert [(p.path, p.model) for p in mesh] == [("mesh", "landmark_cnn1d_fer2013")]
    assert [(p.path, p.model) for p in box] == [("box", pipe.fallback.name)]
    assert np.isclose(box[0].probs.sum(), 1.0) and box[0].classes == mesh[0].classes
    with Pipeline(LANDMARK_MODEL, mode="static", fallback_model=None) as pipe:
        assert pipe.process(img).predictions == []  # no fallback: the face gets no prediction


def test_predict_path_column(tmp_path, frames, boxes):
    cv2.imwrite(str(tmp_path / "a_plain.png"), frames[0])
    cv2.imwrite(str(tmp_path / "b_covered.png"), covered(frames[0], boxes[0]))
    cv2.imwrite(str(tmp_path / "c_blank.png"), np.zeros((360, 640, 3), np.uint8))
    with Pipeline(LANDMARK_MODEL) as pipe:
        df = predict([tmp_path], pipe).frame
    assert list(df.columns) == columns_for(pipe.classes) and df.columns[-1] == "path"
    paths = dict(zip(df.source.map(lambda s: s.rsplit("/", 1)[-1]), df.path))
    expect_box = "box" if pipe.fallback is not None else None
    assert paths["a_plain.png"] == "mesh" and paths["c_blank.png"] == ""
    assert paths.get("b_covered.png") == (expect_box or "")


def test_stills_never_take_the_tracking_path(frames):
    """predict switches the extractor to static mode for images: tracking follows the mode."""
    with Pipeline(IMAGE_MODEL) as pipe:
        pipe.extractor.mesh = True
        assert pipe.extractor.tracking is True
        pipe.extractor.mode = "static"
        assert pipe.extractor.tracking is False
        pipe.extractor.mode = "video"
        assert pipe.extractor.tracking is True
    with pytest.raises(InputError, match="mode"):
        LandmarkExtractor().mode = "stream"


@pytest.mark.parametrize("shape", [(1, 1, 3), (480, 640, 3), (8, 20000, 3)], ids=["1x1", "black", "20000-wide"])
def test_bad_or_empty_frames_get_a_clear_answer(tmp_path, shape):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.zeros(shape, np.uint8))
    out = tmp_path / "p.csv"
    r = subprocess.run([sys.executable, "-m", "ferlib", "predict", str(path), "--model", str(IMAGE_MODEL),
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if shape[1] > 16384:  # refused from the header, with the reason
        assert r.returncode == 2 and "exceeds the limit" in r.stderr
        return
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 1 and df.detected[0] == 0 and df.label[0] == "" and df.path[0] == ""


def test_models_load_by_bare_shipped_name(tmp_path):
    with Pipeline("image_cnn_fer2013", mode="static") as pipe:
        assert pipe.model_path == ROOT / "models" / "image_cnn_fer2013.json"
    with pytest.raises(ModelFileError, match="does not exist.*shipped: .*resnet18_attention_fer2013_long"):
        Pipeline("no_such_model")
    with pytest.raises(ModelFileError, match="does not exist"):
        Pipeline(tmp_path / "image_cnn_fer2013")  # a path is never taken for a shipped name
