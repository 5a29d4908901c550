"""The short-sequence model (ferlib.training.sequence) on real embeddings from the committed clip, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ferlib.errors import InputError
from ferlib.training.sequence import (
    SequenceConfig,
    n_parameters,
    predict_causal,
    train_sequence_model,
    video_embeddings,
    windows,
)

STEP = 2  # every second frame (12 fps): the front end dominates this file's time


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(mask)
    return [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(r)]


@pytest.fixture(scope="module")
def clip(fixture_clip):
    """Front end on the clip; sad (crying) 0-9 s, happy (laughing) from 11 s; train on the first
    4.5 s of each emotion, test on its last 3 s (1.5 s or more after the last training frame)."""
    ve = video_embeddings(fixture_clip, step=STEP)
    t, c = ve.t_s, list(ve.classes)
    truth = np.where(t < 9, c.index("sad"), np.where(t >= 11, c.index("happy"), -1))
    train = ((t < 4.5) | ((t >= 11) & (t < 15.5))) & ve.detected
    test = (((t >= 6) & (t < 9)) | (t >= 16.7)) & ve.detected
    return ve, truth, train, test


def test_front_end_gives_one_embedding_per_frame(clip):
    ve, *_ = clip
    n = len(ve.frame)
    assert n == pytest.approx(472 / STEP, abs=1)
    assert ve.embeddings.shape == (n, 128) and ve.probs.shape == (n, len(ve.classes))
    assert ve.detected.mean() > 0.9
    assert np.isfinite(ve.embeddings[ve.detected]).all()
    np.testing.assert_allclose(ve.probs[ve.detected].sum(1), 1.0, atol=1e-4)
    assert len(next(iter(ve.inputs.values()))) == ve.detected.sum()
    assert ve.fps == pytest.approx(23.98, abs=0.05)


def test_trains_on_a_recording_and_labels_every_frame_causally(clip):
    ve, truth, train, test = clip
    seqs = [(ve.embeddings[r], truth[r]) for r in _runs(train)]
    model, report = train_sequence_model(seqs, ve.classes, SequenceConfig(window=8))
    assert 1_000 <= n_parameters(model) <= 100_000 and report["parameters"] == n_parameters(model)
    assert set(report["per_class"]) == {"sad", "happy"}
    emb = ve.embeddings[ve.detected]
    probs = predict_causal(model, emb)
    assert probs.shape == (len(emb), len(ve.classes))  # one label per frame with a face
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    labels = np.full(len(ve.frame), -1)
    labels[ve.detected] = probs.argmax(1)
    acc = float((labels[test] == truth[test]).mean())
    shipped = float((np.nan_to_num(ve.probs, nan=-1).argmax(1)[test] == truth[test]).mean())
    assert acc >= 0.85 and acc > shipped, (acc, shipped)  # measured: 1.0 vs the shipped model's 0.56
    # causal: a frame's label does not depend on later frames
    k = len(emb) // 2
    np.testing.assert_allclose(predict_causal(model, emb[:k]), probs[:k], atol=1e-5)


def test_windows_pad_the_start_with_the_first_frame():
    e = torch.arange(5, dtype=torch.float32)[:, None].repeat(1, 2)
    w = windows(e, 3, pad=True)
    assert w.shape == (5, 3, 2)
    assert w[0, :, 0].tolist() == [0, 0, 0] and w[4, :, 0].tolist() == [2, 3, 4]
    assert windows(e, 3).shape == (3, 3, 2)


def test_too_few_frames_is_a_clear_error(clip):
    ve, truth, train, _ = clip
    r = _runs(train)[0][:5]
    with pytest.raises(InputError, match="too few frames.*at least 8 consecutive frames; the longest has 5"):
        train_sequence_model([(ve.embeddings[r], truth[r])], ve.classes, SequenceConfig(window=8))
    with pytest.raises(InputError, match="at least one sequence"):
        train_sequence_model([], ve.classes)


def test_one_emotion_only_is_a_clear_error(clip):
    ve, truth, train, _ = clip
    sad = [(ve.embeddings[r], truth[r]) for r in _runs(train & (ve.t_s < 9))]
    with pytest.raises(InputError, match="at least two emotions; got only sad"):
        train_sequence_model(sad, ve.classes)


def test_bad_shapes_and_values_are_clear_errors(clip):
    ve, truth, train, _ = clip
    r = _runs(train)[0]
    e, y = ve.embeddings[r], truth[r]
    with pytest.raises(InputError, match="labels of shape"):
        train_sequence_model([(e, y[:-1])], ve.classes)
    with pytest.raises(InputError, match="must index the 7 classes"):
        train_sequence_model([(e, np.full(len(e), 9))], ve.classes)
    with pytest.raises(InputError, match=r"expected \(frames, dim\)"):
        train_sequence_model([(e[:, 0], y)], ve.classes)
    bad = e.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        train_sequence_model([(bad, y)], ve.classes)
    seqs = [(ve.embeddings[q], truth[q]) for q in _runs(train)]
    model, _ = train_sequence_model(seqs, ve.classes, SequenceConfig(window=4, epochs=1))
    with pytest.raises(InputError, match="dimension 64, the model takes 128"):
        predict_causal(model, e[:, :64])
    with pytest.raises(InputError, match=r"expected \(frames, dim\)"):
        predict_causal(model, e[:0])
    with pytest.raises(InputError, match="odd kernel"):
        SequenceConfig(kernel=2)
    with pytest.raises(InputError, match="step"):
        video_embeddings("unused.mp4", step=0)
