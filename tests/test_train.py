"""Inputs (build_batch, augmentation) and training: learning, reproducibility, callback, cancel, fine-tune."""
from __future__ import annotations

import json
import math
import threading

import cv2
import numpy as np
import pytest
import torch

from ferlib.classes import FER7
from ferlib.errors import InputError
from ferlib.faces.features import DISTANCE_POINTS
from ferlib.faces.normalize import MIRROR_PERMUTATION, SUBSETS
from ferlib.inference.checkpoint import make_card, save_checkpoint
from ferlib.inputs import (
    Augmenter,
    InputSpec,
    Mirror,
    TensorSet,
    build_batch,
    clarity_stratum,
    keypoint_targets,
    render_heatmaps,
    turn_images,
)
from ferlib.models import create_model
from ferlib.training.train import TrainConfig, class_weights, finetune, train
from tests.helpers import faces_px, image_task, landmark_task

CLASSES3 = ["angry", "happy", "sad"]


def mirror_px(p: np.ndarray, width: float = 640) -> np.ndarray:
    m = p[:, MIRROR_PERMUTATION].copy()
    m[..., 0] = width - m[..., 0]
    return m


# ----------------------------------------------------------------------------- inputs

def test_build_batch_shapes_and_values():
    lm = faces_px(5)
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    spec = InputSpec(kind="hybrid", keys=("image", "landmarks", "heatmaps", "patches", "distances", "stratum"),
                     clarity_edges=(100.0, 1000.0))
    b = build_batch(spec, lm, crops)
    assert b["landmarks"].shape == (5, 3, len(SUBSETS["default"]))
    assert float(b["landmarks"].min()) >= 0 and float(b["landmarks"].max()) <= 1
    assert b["image"].shape == (5, 1, 48, 48) and b["heatmaps"].shape == (5, 1, 48, 48)
    assert b["patches"].shape == (5, 3, 24, 24)
    assert b["distances"].shape == (5, len(DISTANCE_POINTS) * (len(DISTANCE_POINTS) - 1) // 2)
    assert b["stratum"].dtype == torch.int64 and b["stratum"].shape == (5,)
    expected = (cv2.resize(crops[0], (48, 48), interpolation=cv2.INTER_AREA) / 255.0 - 0.5) / 0.25
    assert torch.allclose(b["image"][0, 0], torch.from_numpy(expected).float(), atol=1e-5)


def test_build_batch_errors_name_the_input():
    with pytest.raises(InputError, match="landmarks_px"):
        build_batch(InputSpec(kind="landmarks"), None)
    with pytest.raises(InputError, match=r"\(N, 478, 3\)"):
        build_batch(InputSpec(kind="landmarks"), np.zeros((2, 10, 3)))
    with pytest.raises(InputError, match="uint8"):
        build_batch(InputSpec(kind="image"), crops=np.zeros((2, 48, 48), np.float32))
    with pytest.raises(InputError, match="2 landmark sets but 3 crops"):
        build_batch(InputSpec(kind="hybrid"), faces_px(2), np.zeros((3, 48, 48), np.uint8))
    with pytest.raises(InputError, match="input kind"):
        InputSpec(kind="audio")


def test_heatmap_peaks_where_the_point_is():
    h = render_heatmaps(np.array([[[12.5 / 48, 36.5 / 48]]]), size=48, sigma=1.0)
    y, x = np.unravel_index(h[0, 0].argmax(), (48, 48))
    assert (y, x) == (36, 12) and h.max() == pytest.approx(1.0)
    assert render_heatmaps(np.random.rand(2, 5, 2), 16, per_point=True).shape == (2, 5, 16, 16)


def test_mirror_matches_mirrored_face():
    """Mirroring built tensors == building from the mirrored face (MIRROR_PERMUTATION + x flip)."""
    lm = faces_px(3)
    spec = InputSpec(kind="hybrid", method="minmax", keys=("landmarks", "distances"))
    b, bm = build_batch(spec, lm), build_batch(spec, mirror_px(lm))
    mirrored = Mirror(spec)(b)
    assert torch.allclose(mirrored["landmarks"], bm["landmarks"], atol=1e-5)
    assert torch.allclose(mirrored["distances"], bm["distances"], atol=1e-5)
    assert not torch.allclose(b["landmarks"], bm["landmarks"], atol=1e-3)


def test_subject_baseline_subtraction():
    lm = faces_px(2)
    spec = InputSpec(kind="landmarks", subtract_baseline=True)
    b = build_batch(spec, lm, baseline=lm[0])
    assert torch.allclose(b["landmarks"][0], torch.zeros(3, 102), atol=1e-6)
    assert b["landmarks"][1].abs().max() > 1e-3
    with pytest.raises(InputError, match="baseline"):
        build_batch(spec, lm)


def test_clarity_strata_and_keypoint_targets():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (1, 48, 48), dtype=np.uint8)
    flat = np.full((1, 48, 48), 128, np.uint8)
    assert clarity_stratum(np.concatenate([flat, sharp]), (50.0,)).tolist() == [0, 1]
    t = keypoint_targets(faces_px(2), crop_size=400)
    assert t.shape == (2, 4, 2) and (t > 0).all() and (t < 1).all()


def test_augmenter_is_reproducible_and_changes_images():
    data = image_task(8)
    aug = Augmenter(data.spec)
    a = aug(data.batch(slice(None)), torch.Generator().manual_seed(1))
    b = aug(data.batch(slice(None)), torch.Generator().manual_seed(1))
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (8, 1, 32, 32)
    assert not torch.equal(a["image"], data.tensors["image"])


def test_turn_augmentation_narrows_a_face_towards_the_far_side():
    x = torch.zeros(1, 1, 48, 48)
    x[..., 12:36, 12:36] = 1.0  # a bright square "face" in the middle
    assert torch.allclose(turn_images(x, torch.zeros(1), 4.0), x, atol=1e-5), "no turn, no change"
    turned = turn_images(x, torch.tensor([math.radians(40)]), 4.0)
    cols = (turned[0, 0] > 0.5).any(0).nonzero().flatten()
    width = int(cols.max() - cols.min() + 1)
    assert 14 <= width <= 21, width  # about cos(40 deg) = 0.77 of 24 pixels, perspective aside
    rows_near, rows_far = ((turned[0, 0, :, c] > 0.5).sum() for c in (int(cols.min()) + 1, int(cols.max()) - 1))
    assert rows_near > rows_far, "the near side of the turned square is taller than the far side"
    data = image_task(8)
    plain = Augmenter(data.spec)(data.batch(slice(None)), torch.Generator().manual_seed(1))
    again = Augmenter(data.spec, turn=0.0)(data.batch(slice(None)), torch.Generator().manual_seed(1))
    assert torch.equal(plain["image"], again["image"]), "turn 0 draws no random numbers"
    turned = Augmenter(data.spec, turn=30.0)(data.batch(slice(None)), torch.Generator().manual_seed(1))
    assert not torch.equal(plain["image"], turned["image"])


# ----------------------------------------------------------------------------- training

def test_class_weights_normalised_inverse_frequency():
    w = class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([0.5, 1.5, 0.0])


@pytest.mark.parametrize("task,model_name,epochs", [(landmark_task, "landmark_cnn1d", 8), (image_task, "image_cnn", 3)])
def test_training_learns_a_separable_task(task, model_name, epochs):
    torch.manual_seed(0)
    tr, va = task(320, seed=0), task(120, seed=1)
    model = create_model(model_name, num_classes=3)
    result = train(model, tr, va, TrainConfig(epochs=epochs, batch_size=32, patience=0, augment=False))
    assert result.best["val_acc"] > 0.85, result.history
    assert not model.training


def test_same_seed_same_weights_different_seed_differs():
    tr, va = landmark_task(128), landmark_task(64, seed=1)

    def run(seed):
        torch.manual_seed(123)
        m = create_model("landmark_cnn1d", num_classes=3)
        train(m, tr, va, TrainConfig(epochs=2, batch_size=32, seed=seed, augment=True))
        return m.state_dict()

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)


def test_callback_events_run_folder_and_options(tmp_path):
    tr, va = landmark_task(100), landmark_task(40, seed=1)
    events = []
    config = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", schedule="cosine", weight_decay=1e-4,
                         label_smoothing=0.1, weighted_sampler=True, tta_flip=True, dropout=0.1, patience=0)
    result = train(create_model("landmark_cnn1d", num_classes=3), tr, va, config, callback=events.append,
                   run_dir=tmp_path / "run")
    kinds = [e["event"] for e in events]
    assert kinds == (["step"] * 4 + ["epoch"]) * 2 + ["done"]
    keys = {"event", "epoch", "step", "steps", "train_loss", "val_loss", "val_acc", "val_f1", "val_recall", "lr",
            "elapsed_s"}
    assert all(set(e) == keys for e in events)
    assert events[4]["val_acc"] is not None and events[-1]["epoch"] == result.best_epoch
    assert events[0]["lr"] > events[-2]["lr"]  # cosine decays
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert [r["epoch"] for r in curves] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["optimizer"] == "adamw"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "done"


def test_cancel_stops_and_reports(tmp_path):
    tr, va = landmark_task(320), landmark_task(40, seed=1)
    cancel = threading.Event()
    events = []

    def cb(e):
        events.append(e)
        if e["event"] == "step" and e["epoch"] == 2 and e["step"] == 3:
            cancel.set()

    result = train(create_model("landmark_cnn1d", num_classes=3), tr, va,
                   TrainConfig(epochs=50, batch_size=32), callback=cb, cancel=cancel, run_dir=tmp_path)
    assert result.cancelled and result.epochs_run == 1 and result.best_epoch == 1
    assert events[-1]["event"] == "cancelled"
    assert sum(e["event"] == "step" for e in events) == 10 + 3
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "cancelled"


def test_freeze_backbone_trains_only_the_head():
    tr, va = landmark_task(64), landmark_task(32, seed=1)
    model = create_model("landmark_cnn1d", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, tr, va, TrainConfig(epochs=1, batch_size=16, freeze_backbone=True))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again after the run


def test_finetune_to_new_classes(tmp_path):
    torch.manual_seed(0)
    model = create_model("landmark_cnn1d", num_classes=7)
    save_checkpoint(model, tmp_path / "base", make_card(model, FER7, InputSpec(kind="landmarks")))
    tr, va = landmark_task(96), landmark_task(48, seed=1)
    ft, card, result = finetune(tmp_path / "base.json", tr, va,
                                TrainConfig(epochs=2, batch_size=32, freeze_backbone=True), classes=CLASSES3)
    assert ft.head.out_features == 3 and card["classes"] == CLASSES3
    assert card["training"]["finetuned_from"]["classes"] == list(FER7)
    assert result.epochs_run == 2
    save_checkpoint(ft, tmp_path / "ft", card)


def keypoint_task(n: int, seed: int) -> TensorSet:
    """Four blobs in a face-like layout (eyes above lip corners), random scale and position."""
    g = torch.Generator().manual_seed(seed)
    template = torch.tensor([[-1.0, -0.6], [1.0, -0.6], [-0.7, 0.8], [0.7, 0.8]])
    pts = template * (0.1 + 0.1 * torch.rand(n, 1, 1, generator=g)) + 0.35 + 0.3 * torch.rand(n, 1, 2, generator=g)
    img = torch.from_numpy(render_heatmaps(pts.numpy(), 32, 2.0)) * 4 - 2
    return TensorSet({"image": img}, pts, InputSpec(kind="image", image_size=32))


def test_keypoint_regressor_learns_points():
    torch.manual_seed(0)
    tr, va = keypoint_task(256, 0), keypoint_task(64, 1)
    predict_mean_mse = float(((va.labels - tr.labels.mean(0)) ** 2).mean())
    model = create_model("keypoint_regressor")
    result = train(model, tr, va, TrainConfig(epochs=4, batch_size=16, patience=0, lr=2e-3))
    assert result.best["val_loss"] < 0.3 * predict_mean_mse
    assert result.history[-1]["val_nme"] < 0.5 * result.history[0]["val_nme"]


def test_mirror_on_a_real_face(fixture_clip):
    """Face mesh on a real frame (head turned ~11 deg) and on its mirror image: Mirror(build_batch(frame))
    matches build_batch(mirrored frame) far better than the unmirrored batch does."""
    from ferlib.faces.landmarks import LandmarkExtractor
    from ferlib.io import iter_video

    _, _, frame = next(iter_video(fixture_clip, max_frames=1))
    with LandmarkExtractor(mode="static") as ex:
        a, b = ex.process(frame), ex.process(np.ascontiguousarray(frame[:, ::-1]))
    assert len(a) == 1 and len(b) == 1
    spec = InputSpec(kind="hybrid", keys=("landmarks", "distances"), method="minmax")
    ba, bb = build_batch(spec, a[0].landmarks), build_batch(spec, b[0].landmarks)
    mirrored = Mirror(spec)(ba)
    for key in ("landmarks", "distances"):
        err = float((mirrored[key] - bb[key]).abs().mean())
        assert err < 0.02 and err < 0.4 * float((ba[key] - bb[key]).abs().mean()), key
