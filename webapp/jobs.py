"""Training jobs that outlive a page reload: a module-level registry of background threads.

A job trains outside the Streamlit script thread (`threading.Thread`, one torch thread), tracks
itself in the store's `runs` table (running -> done/failed/cancelled; a killed app leaves
'running', which Store.check() marks 'interrupted' at the next start) and registers its result
as a new model version with its card. The training itself is `ferlib.training.workflow`'s, the one the
`ferlib train` / `ferlib finetune` commands run, so the card has the same schema.
"""
from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ferlib.classes import FER7
from ferlib.errors import InputError
from ferlib.models import create_model
from ferlib.store import Store, validate_name
from ferlib.training.personal import DEFAULT_METHOD, AdaptConfig
from ferlib.training.train import RESUME_FILE, TrainConfig
from ferlib.training.workflow import (
    PrepareOptions,
    Progress,
    TrainingData,
    adapt_personal,
    finetune_base,
    save_outcome,
    train_new,
    training_spec,
)
from webapp.datasets import dataset_path, import_extra, studio_table
from webapp.ui import error_text

# Everything the worker needs is imported here, in the importing (script) thread: compiling modules
# in a worker thread while Streamlit parses a page races in CPython 3.11's AST validator
# ("SystemError: AST constructor recursion depth mismatch").
_JOBS: dict[int, "TrainJob"] = {}
_LOCK = threading.Lock()


@dataclass
class TrainSpec:
    """What the Train page asks for. base_path None = train `model_type` from scratch; extra_data: an
    imported dataset (folder, .zip or .csv) whose rows are added to the training split. adapt (with a
    base): a ferlib.training.personal method (few-shot: every train and val sample, a fixed schedule; epochs,
    patience, lr and freeze_backbone are the classic fine-tune's) or "train" (the classic fine-tune)."""

    name: str
    session_ids: Sequence[int]
    extra_data: str | None = None
    base_path: str | None = None
    model_type: str = "landmark_cnn1d"
    normalisation: str = "proposed"
    subject_conditioning: bool = False
    freeze_backbone: bool = False
    adapt: str = DEFAULT_METHOD
    batch_size: int = 32
    epochs: int = 20
    patience: int = 5
    lr: float = 1e-3


@dataclass
class TrainJob:
    """One background training run: its progress, status and outcome; device is the one it trains
    on ("cpu"/"cuda", set once known)."""

    run_id: int
    spec: TrainSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    history: list[dict] = field(default_factory=list)
    progress: float = 0.0
    status: str = "running"
    message: str = ""
    model_id: int | None = None
    test_metrics: dict | None = None
    device: str = ""
    counts: dict = field(default_factory=dict)
    thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def fraction(self) -> float:
        """What the Train page's bar shows: 1.0 once the run is done, else its progress (0..1)."""
        return 1.0 if self.status == "done" else min(1.0, max(0.0, float(self.progress)))


def train_progress(ev: dict, epochs: int) -> float | None:
    """The Train page's progress after one `ferlib.training.train.train` event, or None where the event does
    not move it (resumed, cancelled).

    step/epoch events: the optimiser steps done over the planned ones (`epochs` x steps per epoch).
    The loop's "done" event: 1.0, also when early stopping ended it before the last epoch: the
    epochs it skipped will not run, so the bar no longer stays at, say, 6 of 7 epochs (86 %) while
    the run scores its test split and registers the model. A finished run shows 1.0 whatever its
    events were (`TrainJob.fraction`)."""
    if ev["event"] == "done":
        return 1.0
    if ev["event"] in ("step", "epoch") and ev["epoch"]:
        steps = max(1, int(ev["steps"] or 0))
        done = (ev["epoch"] - 1) * steps + min(ev["step"] or 0, steps)
        return min(1.0, done / (max(1, epochs) * steps))
    return None


class _Cancelled(Exception):
    """The user cancelled while the job was still finding faces in the extra data."""


def active_ids() -> list[int]:
    """Run ids of jobs whose thread is still running in this process."""
    with _LOCK:
        return [i for i, j in _JOBS.items() if j.alive]


def get(run_id: int) -> TrainJob | None:
    with _LOCK:
        return _JOBS.get(int(run_id))


def start(store: Store, spec: TrainSpec) -> TrainJob:
    """Validate, record the run and start the background thread; returns at once."""
    validate_name(spec.name, "model name")
    if spec.extra_data:
        extra = dataset_path(spec.extra_data).resolve()
        if extra == store.root.resolve():
            raise InputError(f"dataset {extra}: this is the app's own data folder; pick its sessions instead")
    run_id = store.start_run(spec.name, {k: (list(v) if k == "session_ids" else v)
                                         for k, v in spec.__dict__.items()})
    job = TrainJob(run_id, spec)
    job.thread = threading.Thread(target=_work, args=(store, job), name=f"ferlib-train-{run_id}", daemon=True)
    with _LOCK:
        _JOBS[run_id] = job
    job.thread.start()
    return job


def _work(store: Store, job: TrainJob) -> None:
    s = job.spec
    try:
        torch.set_num_threads(1)
        job.message = "loading data"
        data = TrainingData([studio_table(store, s.session_ids)],
                            [import_extra(s.extra_data)] if s.extra_data else [], studio_sessions=s.session_ids)

        def on_extract(done: int, total: int) -> None:
            if job.cancel.is_set():
                raise _Cancelled
            job.message = f"finding faces in the extra data: {done}/{total} images"

        def on_event(ev: dict) -> None:
            fraction = train_progress(ev, s.epochs)
            if fraction is not None:
                job.progress = fraction
            if ev["event"] == "epoch":
                job.history.append({k: ev[k] for k in ("epoch", "train_loss", "val_loss", "val_acc", "val_f1")})
                store.update_run(job.run_id, {"history": job.history})
            if ev["event"] in ("step", "epoch"):
                job.message = f"epoch {ev['epoch']}/{s.epochs}"
            elif ev["event"] == "done":  # its epoch is the best one, not the last ("epoch 1/7" after epoch 2)
                job.message = "testing and registering the model"

        def log(text: str) -> None:
            if text.startswith("adapting "):
                job.message = f"learning your face: {text}"

        progress = Progress(log=log, on_event=on_event, on_extract=on_extract, cancel=job.cancel)
        options = PrepareOptions(drop_unknown=True, workers=1)
        config = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, patience=s.patience, lr=s.lr,
                             freeze_backbone=s.freeze_backbone, num_threads=1, device="auto").resolved()
        job.device = config.device  # the GPU when torch sees one
        run_dir = store.run_dir(job.run_id)
        job.message = "training"
        if s.base_path and s.adapt != "train":
            job.device = "cpu"
            out = adapt_personal(s.base_path, data, AdaptConfig(method=s.adapt), run_dir=run_dir, options=options,
                                 progress=progress)
        elif s.base_path:
            out = finetune_base(s.base_path, data, config, run_dir=run_dir, options=options, progress=progress,
                                require_val=False)
        else:
            model = create_model(s.model_type, num_classes=len(FER7))
            spec = training_spec(model, method=s.normalisation, subtract_baseline=s.subject_conditioning)
            out = train_new(model, spec, list(FER7), data, config, run_dir=run_dir, options=options,
                            progress=progress, require_val=False)
        if out.result.cancelled:
            raise _Cancelled
        job.counts = dict(out.card["data"]["n"])
        job.test_metrics = out.metrics.get("test")
        wpath, _ = save_outcome(out, store.model_dir(s.name) / "model")
        job.model_id = store.add_model(s.name, wpath, out.card)
        job.progress, job.status = 1.0, "done"
        job.message = "done" + (" (stopped early)" if out.result.stopped_early else "")
        store.finish_run(job.run_id, "done", {"history": job.history, "model_id": job.model_id,
                                             "best": out.result.best, "test": job.test_metrics, "device": job.device})
    except _Cancelled:
        job.status, job.message = "cancelled", "stopped by the user"
        store.finish_run(job.run_id, "cancelled", {"history": job.history})
    except Exception as e:  # the UI shows it; the run row records it
        job.status, job.message = "failed", error_text(e)
        try:
            store.finish_run(job.run_id, "failed", {"history": job.history, "error": job.message,
                                                   "traceback": traceback.format_exc(limit=5)})
        except Exception:
            pass
    finally:  # the page offers no resume: its runs keep their curves and metrics, not the 10+ MB state
        try:
            (store.run_dir(job.run_id) / RESUME_FILE).unlink(missing_ok=True)
        except OSError:
            pass
