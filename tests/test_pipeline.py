"""The one pipeline and the predict CLI, on the committed real clip."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ferlib.classes import FER7
from ferlib.errors import InputError, ModelFileError
from ferlib.inference.checkpoint import make_card, save_checkpoint
from ferlib.inference.pipeline import Pipeline, Smoother
from ferlib.inference.predict import columns_for, predict
from ferlib.inputs import spec_for_model
from ferlib.models import create_model
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained landmark model saved as a real checkpoint (weights do not matter here)."""
    import torch

    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=7)
    stem = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(m, stem, make_card(m, FER7, spec_for_model(m)))
    return stem


@pytest.fixture(scope="module")
def clip_frames(fixture_clip):
    from ferlib.io import iter_video

    # a few frames from the laughing half and one from the start
    frames = {}
    for idx, ts, bgr in iter_video(fixture_clip):
        if idx in (0, 300, 301, 302):
            frames[idx] = (ts, bgr)
        if idx > 302:
            break
    return frames


def test_process_real_frames(tiny_checkpoint, clip_frames):
    with Pipeline(tiny_checkpoint) as pipe:
        for idx, (ts, bgr) in clip_frames.items():
            res = pipe.process(bgr, ts, idx)
            assert len(res.predictions) == 1, f"one face expected in frame {idx}"
            p = res.predictions[0]
            assert p.probs.shape == (7,) and abs(p.probs.sum() - 1) < 1e-5
            assert p.face.landmarks.shape == (478, 3)
            assert p.label in FER7
            assert {"landmarks", "prepare", "model", "total"} <= set(res.timings_ms)


def test_no_face_is_an_empty_result(tiny_checkpoint):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with Pipeline(tiny_checkpoint) as pipe:
        assert pipe.process(noise).predictions == []
        with pytest.raises(InputError):
            pipe.process(np.zeros((0, 0, 3), np.uint8))


def test_predict_schema_and_no_face_row(tiny_checkpoint, fixture_clip, tmp_path):
    import cv2

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 127, np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with Pipeline(tiny_checkpoint) as pipe:
        rep = predict([fixture_clip, tmp_path], pipe, max_frames=5)
    df = rep.frame
    assert list(df.columns) == columns_for(FER7)
    assert list(df.columns[:5]) == ["source", "frame", "face", "detected", "label"]
    vid = df[df.source == str(fixture_clip)]
    assert list(vid.frame) == [0, 1, 2, 3, 4] and vid.detected.all()
    row = df[df.source == str(blank)].iloc[0]
    assert row.detected == 0 and row.label == "" and np.isnan(row.p_happy)
    assert len(rep.errors) == 1 and "broken.jpg" in rep.errors[0]


def test_smoother():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    ema = Smoother("ema", alpha=0.5)
    ema(0, a)
    assert np.allclose(ema(0, b), [0.5, 0.5])
    assert np.allclose(ema(1, b), b)  # faces are smoothed separately
    vote = Smoother("vote", window=2)
    vote(0, a), vote(0, b)
    assert np.allclose(vote(0, b), [0.0, 1.0])
    with pytest.raises(InputError):
        Smoother("median")


def test_foreign_model_file_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    (tmp_path / "x.safetensors").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelFileError):
        Pipeline(tmp_path / "x")


def test_cli_predict(tiny_checkpoint, fixture_clip, tmp_path):
    out = tmp_path / "out.csv"
    r = subprocess.run([sys.executable, "-m", "ferlib", "predict", str(fixture_clip), "--model", str(tiny_checkpoint),
                        "--out", str(out), "--max-frames", "3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(" + str(tiny_checkpoint) + ".json, onnx, 1 thread(s)" in r.stderr  # the fast runner by default
    assert "3 frames/images in" in r.stderr
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 3 and list(df.columns) == columns_for(FER7)
    r = subprocess.run([sys.executable, "-m", "ferlib", "predict", str(tmp_path / "missing.jpg"), "--model",
                        str(tiny_checkpoint), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_flip_averaging_covers_small_frames_only(clip_frames):
    """FLIP_MAX_FACES: a frame with at most that many faces gets flip averaging (the card's tta_flip),
    a bigger group's faces are read once; several frames in one model call each follow their own count."""
    from ferlib.inference.pipeline import FLIP_MAX_FACES

    one = clip_frames[300][1]
    group = np.hstack([clip_frames[i][1] for i in (300, 301, 302)])
    assert FLIP_MAX_FACES < 3

    def probs(**kw):
        with Pipeline(mode="static", **kw) as pipe:
            assert pipe._mirror is not None or kw.get("tta_flip") is False, "the default's card asks for flip TTA"
            single = [p.probs for p in pipe.process(one).predictions]
            crowd = [p.probs for p in pipe.process(group).predictions]
            faces = [pipe.extractor.process(one), pipe.extractor.process(group)]
            together = pipe.predict_frames([(one, faces[0]), (group, faces[1])])
            return single, crowd, [[p.probs for p in ps] for ps in together]

    every, never, rule = probs(flip_max_faces=None), probs(tta_flip=False), probs()
    assert len(every[0]) == 1 and len(every[1]) == 3
    np.testing.assert_allclose(rule[0], every[0], rtol=1e-5, atol=1e-6)     # one face: flipped
    np.testing.assert_allclose(rule[1], never[1], rtol=1e-5, atol=1e-6)     # three faces: read once
    assert not np.allclose(every[1], never[1], atol=1e-4), "flip averaging changes the probabilities"
    np.testing.assert_allclose(rule[2][0], every[0], rtol=1e-5, atol=1e-6)  # per frame in a shared call
    np.testing.assert_allclose(rule[2][1], never[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError):
        Pipeline(flip_max_faces=-1)
