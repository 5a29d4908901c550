"""Evaluation metrics on hand-computable examples, pose bins, the figure, occlusion test, keypoint error."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ferlib.errors import InputError
from ferlib.models import create_model
from ferlib.training.evaluate import confusion_figure, evaluate, keypoint_nme, occlusion_test, save_metrics
from ferlib.training.train import TrainConfig, train
from tests.helpers import image_task, landmark_task

CLASSES3 = ["angry", "happy", "sad"]
Y = np.array([0, 0, 1, 1, 2, 2])
PRED = np.array([0, 1, 1, 1, 2, 0])
DETECTED = np.array([1, 1, 1, 1, 1, 0], bool)


def one_hot_probs(pred, c=3):
    p = np.full((len(pred), c), 0.1)
    p[np.arange(len(pred)), pred] = 0.8
    return p


def test_hand_computed_metrics_with_a_missed_face():
    m = evaluate(one_hot_probs(PRED), Y, CLASSES3, detected_mask=DETECTED)
    assert (m["n"], m["n_detected"], m["detection_rate"]) == (6, 5, pytest.approx(5 / 6))
    assert m["accuracy"] == pytest.approx(4 / 5) and m["accuracy_all"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert m["confusion_normalised"][0] == [0.5, 0.5, 0.0]
    pc = m["per_class"]
    assert (pc["angry"]["precision"], pc["angry"]["recall"], pc["angry"]["f1"]) == pytest.approx((1, 0.5, 2 / 3))
    assert pc["happy"]["support"] == 2
    assert (pc["happy"]["precision"], pc["happy"]["f1"]) == pytest.approx((2 / 3, 0.8))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    # the miss counts as a wrong prediction of a 'sad' face: sad recall 1/2, F1 2/3
    assert m["macro_f1_all"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    # probabilities given for the detected faces only give the same figures
    assert evaluate(one_hot_probs(PRED[DETECTED]), Y, CLASSES3, detected_mask=DETECTED) == m


def test_pose_bins():
    poses = np.array([[0, 0, 0], [20, 0, 0], [-40, 5, 0], [5, np.nan, 0], [50, 0, 0], [0, 0, 0]], float)
    m = evaluate(one_hot_probs(PRED), Y, CLASSES3, detected_mask=DETECTED, poses=poses)
    yaw = {b["bin"]: (b["n"], b["accuracy"]) for b in m["pose_accuracy"]["yaw"]}
    assert yaw == {"<-30": (1, 1.0), "-30..-10": (0, None), "-10..10": (2, 1.0), "10..30": (1, 0.0), ">30": (1, 1.0)}
    assert sum(b["n"] for b in m["pose_accuracy"]["pitch"]) == 4  # the NaN pitch is left out


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="shape"):
        evaluate(np.zeros((6, 4)), Y, CLASSES3)
    with pytest.raises(InputError, match="detected_mask"):
        evaluate(one_hot_probs(PRED), Y, CLASSES3, detected_mask=[True])
    with pytest.raises(InputError, match="class indices"):
        evaluate(one_hot_probs(PRED), Y + 5, CLASSES3)


def test_figure_and_saved_json(tmp_path):
    m = evaluate(one_hot_probs(PRED), Y, CLASSES3)
    fig = confusion_figure(m)
    assert np.allclose(np.asarray(fig.data[0].z), m["confusion_normalised"])
    assert list(fig.data[0].x) == CLASSES3
    assert confusion_figure(m, normalised=False).data[0].text[1][1] == "2"
    path = save_metrics(m, tmp_path / "metrics.json")
    assert json.loads(path.read_text())["accuracy"] == m["accuracy"]


@pytest.mark.parametrize("kind", ["landmarks", "image"])
def test_occlusion_drops_accuracy_only_where_the_information_is(kind):
    """The class lives in the mouth region (lip landmarks / a band over the mouth): hiding the mouth
    costs accuracy, hiding the eyes does not."""
    torch.manual_seed(0)
    if kind == "landmarks":
        tr, te = landmark_task(320), landmark_task(150, seed=1)
        model = create_model("landmark_cnn1d", num_classes=3)
    else:
        box = (21, 29, 7, 25)  # inside REGIONS["mouth"] of a 32-pixel crop, outside "eyes"
        tr, te = image_task(320, box=box), image_task(150, seed=1, box=box)
        model = create_model("image_cnn", num_classes=3)
    train(model, tr, te, TrainConfig(epochs=8 if kind == "landmarks" else 3, batch_size=32, patience=0, augment=False))
    mouth = occlusion_test(model, te.spec, te, "mouth")
    eyes = occlusion_test(model, te.spec, te, "eyes")
    assert mouth["accuracy"] > 0.85 and mouth["drop"] > 0.3, mouth
    assert abs(eyes["drop"]) < 0.05, eyes
    with pytest.raises(InputError, match="nose"):
        occlusion_test(model, te.spec, te, "nose")


def test_evaluate_a_model_on_data_with_tta():
    torch.manual_seed(0)
    te = landmark_task(40)
    model = create_model("landmark_cnn1d", num_classes=3)
    m = evaluate(model, classes=CLASSES3, data=te, tta_flip=True)
    assert m["n"] == 40 and sum(map(sum, m["confusion"])) == 40


def test_keypoint_nme():
    t = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.2, 1.0], [0.8, 1.0]]])
    assert keypoint_nme(t + torch.tensor([0.1, 0.0]), t) == pytest.approx(0.1)
    assert keypoint_nme(t * 2, t * 2) == 0.0
    with pytest.raises(InputError, match="matching"):
        keypoint_nme(t, t[:, :3])
