"""Knowledge distillation (TrainConfig.distill_weight, train --teacher) and pose augmentation
(TrainConfig.pose_augment, ferlib.inputs.PoseAugmenter)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ferlib.errors import InputError
from ferlib.faces.normalize import SUBSETS, canonical_face
from ferlib.inference.checkpoint import load_checkpoint
from ferlib.inputs import InputSpec, PoseAugmenter, TensorSet, build_batch
from ferlib.models import create_model
from ferlib.training.train import TrainConfig, distill_loss, train


def raw_faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = canonical_face() * 80 + np.array([200, 220, 0])
    return (base[None] + rng.normal(0, 2.0, (n, 478, 3))).astype(np.float32)


def task(n: int, seed: int = 0):
    """(TensorSet of 3 classes told apart by lip height, raw landmarks of each row)."""
    rng = np.random.default_rng(seed)
    raw = raw_faces(n, seed)
    y = rng.integers(0, 3, n)
    lips = list(SUBSETS["lips"])
    raw[:, lips, 1] += 4.0 * y[:, None]
    spec = InputSpec(kind="landmarks")
    return TensorSet.build(spec, y, raw), raw


def _weights(config, tr, va, **kw):
    torch.manual_seed(7)
    m = create_model("landmark_cnn1d", num_classes=3)
    train(m, tr, va, config, **kw)
    return m.state_dict()


def test_distill_weight_zero_equals_plain_training():
    (tr, _raw), (va, _) = task(96), task(32, seed=1)
    teacher = torch.softmax(torch.randn(len(tr), 3, generator=torch.Generator().manual_seed(0)), 1)
    cfg = TrainConfig(epochs=2, batch_size=16, seed=3, augment=True)
    a = _weights(cfg, tr, va)
    b = _weights(cfg, tr, va, teacher_probs=teacher)  # weight 0: the teacher is ignored
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _weights(TrainConfig(epochs=2, batch_size=16, seed=3, augment=True, distill_weight=0.5), tr, va,
                 teacher_probs=teacher)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].dtype.is_floating_point)
    d = _weights(TrainConfig(epochs=2, batch_size=16, seed=3, augment=True, distill_weight=0.5), tr, va,
                 teacher_probs=teacher)
    assert all(torch.equal(c[k], d[k]) for k in c), "distillation is reproducible for a seed"


def test_distill_loss_and_checks():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)
    assert float(distill_loss(logits, p, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(logits, torch.tensor([[0.1, 0.8, 0.1]]), 2.0)) > 0.1
    (tr, _), (va, _) = task(16), task(8, seed=1)
    with pytest.raises(InputError, match="teacher"):
        train(create_model("landmark_cnn1d", num_classes=3), tr, va, TrainConfig(epochs=1, distill_weight=0.5))
    with pytest.raises(InputError, match="shape"):
        train(create_model("landmark_cnn1d", num_classes=3), tr, va, TrainConfig(epochs=1, distill_weight=0.5),
              teacher_probs=torch.full((3, 3), 1 / 3))
    with pytest.raises(InputError):
        TrainConfig(distill_weight=1.5)
    new_keys = ("distill_weight", "distill_temperature", "pose_augment")
    assert TrainConfig.from_dict({k: v for k, v in TrainConfig().to_dict().items()
                                  if k not in new_keys}) == TrainConfig()


def test_distillation_pulls_the_student_to_the_teacher():
    """With w = 1 the labels are ignored: a teacher that says class 0 for everything wins."""
    (tr, _), (va, _) = task(96), task(32, seed=1)
    teacher = torch.tensor([[0.98, 0.01, 0.01]]).repeat(len(tr), 1)
    torch.manual_seed(0)
    m = create_model("landmark_cnn1d", num_classes=3)
    train(m, tr, va, TrainConfig(epochs=3, batch_size=16, distill_weight=1.0, patience=0, lr=3e-3),
          teacher_probs=teacher)
    with torch.no_grad():
        assert (m(tr.tensors).argmax(1) == 0).float().mean() > 0.9


@pytest.mark.parametrize("method", ["proposed", "minmax", "similarity"])
def test_pose_augmentation_finite_and_changes_landmarks(method):
    raw = raw_faces(8)
    spec = InputSpec(kind="landmarks", method=method)
    batch = build_batch(spec, raw)
    pa = PoseAugmenter(spec, max_yaw=30)
    out = pa(batch, torch.from_numpy(raw), torch.Generator().manual_seed(0))
    lm = out["landmarks"]
    assert lm.shape == batch["landmarks"].shape and torch.isfinite(lm).all()
    assert float((lm - batch["landmarks"]).abs().mean()) > 1e-3
    again = pa(batch, raw, torch.Generator().manual_seed(0))["landmarks"]
    assert torch.equal(lm, again), "reproducible for a generator seed"
    assert np.allclose(pa.rotate(raw, 0.0, 0.0), raw), "a zero turn leaves the points as they are"


def test_pose_augmentation_is_perspective_for_the_affine_normalisation():
    """The proposed normalisation undoes a rigid turn exactly; the perspective of the turn remains."""
    raw = raw_faces(4)
    spec = InputSpec(kind="landmarks")
    base = build_batch(spec, raw)["landmarks"]
    far = PoseAugmenter(spec, distance=1e7)
    near = PoseAugmenter(spec, distance=3.0)
    assert float((build_batch(spec, far.rotate(raw, 30, 5))["landmarks"] - base).abs().max()) < 1e-4
    assert float((build_batch(spec, near.rotate(raw, 30, 5))["landmarks"] - base).abs().mean()) > 2e-3
    with pytest.raises(InputError):
        PoseAugmenter(InputSpec(kind="image"))


def test_pose_augmented_training_runs_and_is_reproducible():
    (tr, raw), (va, _) = task(64), task(32, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=16, seed=1, pose_augment=30)
    a = _weights(cfg, tr, va, raw_landmarks=raw)
    b = _weights(cfg, tr, va, raw_landmarks=raw)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for v in a.values() if v.dtype.is_floating_point)
    with pytest.raises(InputError, match="raw_landmarks"):
        _weights(cfg, tr, va)


@pytest.mark.slow
def test_train_with_a_teacher_on_real_faces(clip_dataset, tmp_path):
    """A tiny real run: a landmark student distilled from the shipped image model on the clip's frames."""
    out = tmp_path / "student"
    r = subprocess.run([sys.executable, "-m", "ferlib", "train", "--model", "landmark_cnn1d", "--data",
                        str(clip_dataset), "--epochs", "2", "--patience", "0", "--batch-size", "8",
                        "--teacher", "resnet18_attention_fer2013_long", "--distill-weight", "0.7",
                        "--distill-temperature", "3", "--pose-augment", "20", "--out", str(out),
                        "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                        "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "teacher probabilities for" in r.stderr
    _, card = load_checkpoint(out)
    cfg = card["training"]["config"]
    assert cfg["distill_weight"] == 0.7 and cfg["distill_temperature"] == 3 and cfg["pose_augment"] == 20
    t = card["training"]["teacher"]
    assert t["model"] == "resnet18_attention" and t["tta_flip"] is True and t["rows"] >= 20
    assert card["classes"] == ["happy", "sad"]


@pytest.mark.slow
def test_finetune_an_image_model_with_turned_faces(clip_dataset, tmp_path):
    """--pose-augment on an image model (the classic fine-tune): half the crops turn as a plane."""
    out = tmp_path / "turned"
    r = subprocess.run([sys.executable, "-m", "ferlib", "finetune", "resnet18_attention_fer2013_long", "--data",
                        str(clip_dataset), "--adapt", "train", "--epochs", "1", "--patience", "0", "--batch-size",
                        "8", "--pose-augment", "40", "--out", str(out), "--run-dir", str(tmp_path / "run"),
                        "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--drop-unknown"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    _, card = load_checkpoint(out)
    assert card["training"]["config"]["pose_augment"] == 40
    assert card["training"]["finetuned_from"]["model"]["name"] == "resnet18_attention"
