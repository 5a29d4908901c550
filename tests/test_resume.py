"""Resumable training: a run stopped after any epoch and resumed gives the weights of one that never stopped."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from ferlib.errors import InputError
from ferlib.inference.checkpoint import load_checkpoint
from ferlib.models import create_model
from ferlib.training.train import RESUME_FILE, TrainConfig, train
from tests.helpers import ROOT, image_task, landmark_task

CONFIG = TrainConfig(epochs=4, batch_size=32, optimizer="adamw", schedule="cosine", weight_decay=1e-3,
                     label_smoothing=0.1, augment=True, dropout=0.2, patience=0, seed=3)


def _model(name="landmark_cnn1d"):
    torch.manual_seed(7)
    return create_model(name, num_classes=3)


def _cancel_in_epoch(epoch: int):
    cancel = threading.Event()

    def cb(e):
        if e["event"] == "step" and e["epoch"] == epoch and e["step"] == 2:
            cancel.set()
    return cancel, cb


@pytest.mark.parametrize("name,task", [("landmark_cnn1d", landmark_task), ("image_cnn", image_task)])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, name, task):
    tr, va = task(160), task(48, seed=1)
    whole = _model(name)
    full = train(whole, tr, va, CONFIG, run_dir=tmp_path / "whole")

    part = _model(name)
    cancel, cb = _cancel_in_epoch(3)  # stops inside epoch 3: epochs 1-2 are saved
    first = train(part, tr, va, CONFIG, callback=cb, cancel=cancel, run_dir=tmp_path / "split")
    assert first.cancelled and first.epochs_run == 2
    assert (tmp_path / "split" / RESUME_FILE).is_file()

    again = _model(name)  # a new process: fresh weights, the run folder holds the rest
    events = []
    second = train(again, tr, va, CONFIG, callback=events.append, run_dir=tmp_path / "split", resume=True)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [3, 4]
    assert second.epochs_run == 4 and second.best_epoch == full.best_epoch
    assert [r["val_loss"] for r in second.history] == [r["val_loss"] for r in full.history]
    a, b = whole.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_a_saved_state_starts_fresh_and_a_finished_run_stays_finished(tmp_path):
    tr, va = landmark_task(96), landmark_task(32, seed=1)
    m1, m2 = _model(), _model()
    r1 = train(m1, tr, va, CONFIG, run_dir=tmp_path / "a")
    r2 = train(m2, tr, va, CONFIG, run_dir=tmp_path / "b", resume=True)  # nothing to resume: a fresh run
    assert all(torch.equal(m1.state_dict()[k], m2.state_dict()[k]) for k in m1.state_dict())
    events = []
    m3 = _model()
    r3 = train(m3, tr, va, CONFIG, callback=events.append, run_dir=tmp_path / "a", resume=True)
    assert not [e for e in events if e["event"] in ("step", "epoch")]  # nothing left to train
    assert r3.history == r1.history  # the saved curves, elapsed times included
    assert [r["val_loss"] for r in r2.history] == [r["val_loss"] for r in r1.history]
    assert all(torch.equal(m1.state_dict()[k], m3.state_dict()[k]) for k in m1.state_dict())


def test_resume_refuses_other_settings_data_or_files(tmp_path):
    tr, va = landmark_task(96), landmark_task(32, seed=1)
    cancel, cb = _cancel_in_epoch(2)
    train(_model(), tr, va, CONFIG, callback=cb, cancel=cancel, run_dir=tmp_path)
    with pytest.raises(InputError, match="other config"):
        train(_model(), tr, va, TrainConfig(**{**CONFIG.to_dict(), "lr": 0.01}), run_dir=tmp_path, resume=True)
    with pytest.raises(InputError, match="other train"):
        train(_model(), landmark_task(96, seed=5), va, CONFIG, run_dir=tmp_path, resume=True)
    # what may change: threads and evaluation batch size
    train(_model(), tr, va, TrainConfig(**{**CONFIG.to_dict(), "num_threads": 1, "eval_batch_size": 7}),
          run_dir=tmp_path, resume=True)
    (tmp_path / RESUME_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot resume"):
        train(_model(), tr, va, CONFIG, run_dir=tmp_path, resume=True)
    with pytest.raises(InputError, match="run folder"):
        train(_model(), tr, va, CONFIG, resume=True)


def _ferlib_train(clip_dataset, out, run_dir, cache, *extra):
    return [sys.executable, "-m", "ferlib", "train", "--model", "landmark_cnn1d", "--data", str(clip_dataset),
            "--epochs", "6", "--patience", "0", "--batch-size", "4", "--optimizer", "adamw", "--schedule", "cosine",
            "--out", str(out), "--run-dir", str(run_dir), "--cache-dir", str(cache), *extra]


def test_cli_run_killed_with_sigkill_resumes_to_the_same_model(tmp_path, clip_dataset):
    """`ferlib train` killed (kill -9 of its process group) after epoch 2, then the same command with
    --resume: the checkpoint equals an uninterrupted run's, weights and card metrics."""
    cache = tmp_path / "cache"
    whole = subprocess.run(_ferlib_train(clip_dataset, tmp_path / "whole", tmp_path / "run_whole", cache),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]

    cmd = _ferlib_train(clip_dataset, tmp_path / "killed", tmp_path / "run_killed", cache)
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 240
    assert p.stderr is not None
    for line in p.stderr:
        if line.startswith("epoch 2:") or time.monotonic() > deadline:
            break
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.safetensors").exists()
    assert (tmp_path / "run_killed" / RESUME_FILE).is_file()

    again = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(r"resumed after epoch [23] ", again.stderr), again.stderr[-2000:]
    assert "epoch 1:" not in again.stderr and "epoch 6:" in again.stderr
    (m1, c1), (m2, c2) = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "killed")
    a, b = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    best1, best2 = c1["metrics"]["val_at_best_epoch"], c2["metrics"]["val_at_best_epoch"]
    assert {k: v for k, v in best1.items() if k != "elapsed_s"} == {k: v for k, v in best2.items() if k != "elapsed_s"}
    assert c1["metrics"]["val"]["confusion"] == c2["metrics"]["val"]["confusion"]


def test_cli_resume_refuses_a_run_folder_of_other_settings(tmp_path, clip_dataset):
    cache = tmp_path / "cache"
    first = subprocess.run(_ferlib_train(clip_dataset, tmp_path / "a", tmp_path / "run", cache, "--epochs", "2"),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    other = subprocess.run(_ferlib_train(clip_dataset, tmp_path / "a", tmp_path / "run", cache, "--lr", "0.01",
                                         "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "cannot resume" in other.stderr and "start a new run folder" in other.stderr
