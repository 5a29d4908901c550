"""Data-parallel training on 2 CPU processes (ferlib.training.ddp: torch DDP over gloo) against one process."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from ferlib.errors import InputError
from ferlib.models import create_model
from ferlib.training.ddp import train_ddp
from ferlib.training.train import TrainConfig, train
from tests.helpers import landmark_task


def _without_batch_norm(model: nn.Module) -> nn.Module:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    return model


def test_two_processes_step_like_one():
    """2 ranks x 16 rows with averaged gradients = one process's batches of 32, up to float error.

    Same global batches (one order, each rank a half), no batch norm, no dropout, no augmentation,
    no class weights: the averaged gradient is the whole batch's mean-loss gradient, summed in
    another order (float32 error ~1e-7 relative). After 8 Adam steps of lr 1e-3 the weights agree
    within 1e-5: far below one step (~1e-3), so a rank that dropped its half, or gradients that were
    summed instead of averaged, or batches that differ, would fail."""
    tr, va = landmark_task(128), landmark_task(64, seed=1)
    torch.manual_seed(0)
    model = _without_batch_norm(create_model("landmark_cnn1d", num_classes=3, channels=16, hidden=32))
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-3, augment=False, dropout=0.0, class_weights=False,
                         patience=0, num_threads=1, seed=0, device="cpu")
    one, two = copy.deepcopy(model), copy.deepcopy(model)
    r1 = train(one, tr, va, config)
    events: list[dict] = []
    r2 = train_ddp(two, tr, va, config, world=2, callback=events.append)
    diff = max(float((a - b).abs().max()) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    moved = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), two.state_dict().values()))
    assert diff < 1e-5 < moved, (diff, moved)
    assert r2.epochs_run == r1.epochs_run == 2 and r2.best_epoch == r1.best_epoch
    for h1, h2 in zip(r1.history, r2.history):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], abs=1e-5)  # every rank's rows, reduced
        assert h2["val_loss"] == pytest.approx(h1["val_loss"], abs=1e-5)
        assert h2["val_acc"] == h1["val_acc"]
    assert [e["event"] for e in events].count("epoch") == 2 and events[-1]["event"] == "done"
    assert sum(e["event"] == "step" for e in events) == 8  # rank 0's steps only


def test_cli_train_ddp(tmp_path, clip_dataset):
    """`ferlib train --ddp 2` with the real landmark model (batch norm: per-rank statistics)."""
    from ferlib.cli import main

    out, run = tmp_path / "m", tmp_path / "run"
    rc = main(["train", "--model", "landmark_cnn1d", "--data", str(clip_dataset), "--epochs", "2", "--patience", "0",
               "--batch-size", "8", "--ddp", "2", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
               "--workers", "1", "--out", str(out), "--run-dir", str(run)])
    assert rc == 0
    curves = json.loads((run / "curves.json").read_text())
    assert [c["epoch"] for c in curves] == [1, 2]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["data_parallel"]["processes"] == 2
    assert card["training"]["epochs_run"] == 2


def test_ddp_bad_input():
    tr, va = landmark_task(16), landmark_task(8, seed=1)
    model = create_model("landmark_cnn1d", num_classes=3, channels=8, hidden=16)
    with pytest.raises(InputError, match="at least 1"):
        train_ddp(model, tr, va, TrainConfig(epochs=1, device="cpu"), world=0)
    with pytest.raises(InputError, match="fewer than 2 rows"):
        train_ddp(model, tr, va, TrainConfig(epochs=1, batch_size=6, device="cpu"), world=4)
    with pytest.raises(InputError, match="cannot be cancelled"):
        import threading

        train_ddp(model, tr, va, TrainConfig(epochs=1, device="cpu"), world=2, cancel=threading.Event())
