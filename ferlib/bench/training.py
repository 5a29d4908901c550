"""Dataset import (FER2013 landmark extraction, then the cached re-run) and fine-tuning time."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ferlib.bench.config import CLIP_LABELS, ROLES, BenchConfig
from ferlib.bench.timing import log
from ferlib.classes import index_of
from ferlib.data import extract_landmarks, import_fer2013
from ferlib.errors import InputError
from ferlib.inference.checkpoint import MODELS_DIR, card_spec, existing_checkpoint, save_checkpoint
from ferlib.inputs import TensorSet
from ferlib.training.train import TrainConfig, finetune


def bench_dataset_import(cfg: BenchConfig, fer2013_zip: Path) -> tuple[list[dict], str | None]:
    """FER2013 (`fer2013_zip`) landmark extraction into a fresh cache, then the cached re-run;
    (rows, skip reason)."""
    zp = Path(fer2013_zip)
    if not zp.is_file():
        return [], f"dataset import skipped: {zp} is absent (../shared/data is only on developer/CI machines)"
    df = import_fer2013(zp).table
    sub = df[df["split"] == "train"].sample(n=min(cfg.dataset_images, int((df["split"] == "train").sum())),
                                            random_state=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferlib-bench-cache-") as d:
        for run in ("first run (extract)", "cached re-run"):
            log(f"dataset import: {len(sub)} FER2013 images, {run}, {cfg.dataset_workers} worker(s)")
            r = extract_landmarks(sub, cache_dir=d, workers=cfg.dataset_workers, progress=False)
            rows.append({"run": run, "images": len(sub), "workers": cfg.dataset_workers,
                         "extracted": r.n_extracted, "cached": r.n_cached, "seconds": r.seconds,
                         "images_per_s": len(sub) / r.seconds, "detection_rate": r.detection_rate})
    return rows, None


def bench_finetune(cfg: BenchConfig, roles: dict, lm, ts) -> list[dict]:
    """Fine-tune the landmark model on `finetune_samples` real clip faces (labels sad/happy by time,
    faces repeated to reach the count) with the Train page's settings, early stopping off."""
    model, card, _ = roles["landmark"]
    keep, labels = [], []
    for j, t in enumerate(ts):
        for lo, hi, name in CLIP_LABELS:
            if lo <= t < hi:
                keep.append(j)
                labels.append(index_of(name, card["classes"]))
    if len(keep) < 2:
        raise InputError("too few labelled clip faces for the fine-tuning benchmark")
    pick = np.arange(cfg.finetune_samples) % len(keep)
    spec = card_spec(card)
    data = TensorSet.build(spec, np.asarray(labels)[pick], landmarks_px=lm[np.asarray(keep)[pick]])
    perm = np.random.default_rng(0).permutation(len(data))
    n_val = max(2, round(0.15 * len(data)))
    train_set, val_set = data.subset(perm[n_val:]), data.subset(perm[:n_val])
    config = TrainConfig(epochs=cfg.finetune_epochs, batch_size=cfg.finetune_batch, patience=0, num_threads=1)
    with tempfile.TemporaryDirectory(prefix="ferlib-bench-ft-") as d:
        base = existing_checkpoint(MODELS_DIR / ROLES["landmark"][0]) \
            or save_checkpoint(model, Path(d) / "base", card)[1]
        t0 = time.perf_counter()
        torch.optim.Adam(model.parameters())  # warm-up: the first optimizer imports torch._dynamo
        first_optimizer_s = time.perf_counter() - t0
        log(f"fine-tuning {len(train_set)} + {len(val_set)} samples, {cfg.finetune_epochs} epochs")
        t0 = time.perf_counter()
        _, _, result = finetune(base, train_set, val_set, config)
        seconds = time.perf_counter() - t0
    return [{"samples": len(data), "train": len(train_set), "val": len(val_set), "epochs": result.epochs_run,
             "batch_size": cfg.finetune_batch, "threads": 1, "seconds": seconds,
             "s_per_epoch": seconds / max(result.epochs_run, 1),
             "s_per_2000_samples_20_epochs": seconds * (2000 / len(data)) * (20 / max(result.epochs_run, 1)),
             "val_acc": result.best.get("val_acc"), "first_optimizer_s": first_optimizer_s}]
