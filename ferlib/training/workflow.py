"""One training workflow: `ferlib train`, `ferlib finetune` and the app's Train page all run it.

A run takes `TrainingData` (datasets used with their own splits, datasets whose every row trains,
and the studio sessions they came from), prepares them with the model's input spec (the landmark
cache finds the faces once), splits them, trains a new model (`train_new`), fine-tunes a checkpoint
(`finetune_base`) or adapts one to a person (`adapt_personal`), scores the val and test splits and
returns an `Outcome` whose card has one schema whatever the route:

- ``card["data"]``: ``names``, ``datasets`` (one entry per dataset: ``name``, ``kind``, ``sha256``,
  ``images``, ``use`` = "splits" or "train only"), ``splits`` and ``split_rules`` (what each split
  holds), ``n`` (samples per split), ``detection_rate`` (per split), ``studio_sessions`` when the
  data are Studio recordings, and ``adaptation`` for a personal model.
- ``card["metrics"]``: ``val_at_best_epoch`` (the best epoch's validation figures, train and
  fine-tune), ``val`` and ``test`` (`ferlib.training.evaluate.evaluate` of each split the data have, faces
  missed counted as wrong in ``*_all``) and a ``note``.
- ``card["training"]``: ``config``, ``epochs_run``, ``best_epoch``, ``stopped_early``, ``elapsed_s``,
  ``device``, ``command`` (when the caller gives one), plus ``teacher``, ``finetuned_from`` or
  ``personal`` as the route adds them.

Cards written before this schema (Studio models with ``data.counts`` / ``data.extra_train``) still
load: nothing reads those fields to rebuild a model.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ferlib.data.dataset import Dataset
from ferlib.data.tensors import Prepared, concat_prepared, dataset_sha256, prepare, split_prepared
from ferlib.errors import InputError
from ferlib.inference.checkpoint import (
    card_spec,
    card_tta_flip,
    make_card,
    read_checkpoint,
    save_checkpoint,
)
from ferlib.inputs import InputSpec, clarity_score, spec_for_model
from ferlib.models import FerModel, count_parameters
from ferlib.training.ddp import train_ddp
from ferlib.training.evaluate import evaluate, save_metrics
from ferlib.training.personal import AdaptConfig, adapt
from ferlib.training.train import TrainConfig, TrainResult, finetune, teacher_probabilities, train

SPLIT_TEXT = {"train": "each dataset's train split (rows without a split train)",
              "val": "each dataset's val split, else a seeded stratified share of its train rows",
              "test": "each dataset's test split"}
SPLIT_RULES = {"fer2013": "official Training/PublicTest/PrivateTest", "ckplus": "by subject (seed)",
               "ferplus": "official FER2013Train/Valid/Test (= FER2013 Training/PublicTest/PrivateTest); "
                          "images without a FER+ majority label left out",
               "affectnet": "a seeded stratified share (--val-frac) of each class validates; no test split",
               "studio": "chunked per emotion and session (70/15/15)"}
METRICS_NOTE = "accuracy_all / macro_f1_all count faces MediaPipe missed as wrong"


def _quiet(_message: str) -> None:
    pass


@dataclass
class TrainingData:
    """The datasets of one run: `datasets` keep their own train/val/test splits; every row of
    `train_only` trains (e.g. AffectNet added to FER2013). Each is a `Dataset`
    (`ferlib.data.tensors.import_dataset`, its root and kind named in the card) or a bare DataFrame
    of rows (Studio rows: no root or kind). studio_sessions: the Studio session ids the rows came
    from, recorded in the card."""

    datasets: Sequence[Dataset | pd.DataFrame]
    train_only: Sequence[Dataset | pd.DataFrame] = ()
    studio_sessions: Sequence[int] | None = None

    def __post_init__(self):
        self.datasets = [Dataset.of(d) for d in self.datasets]
        self.train_only = [Dataset.of(d) for d in self.train_only]
        if not self.datasets and not self.train_only:
            raise InputError("no training data: give at least one dataset")


@dataclass
class Progress:
    """How a run reports and stops. log: one line of text per step (the CLI prints to stderr);
    on_event: `ferlib.training.train.train`'s step/epoch events; on_extract(done, total): face finding in
    data not yet in the landmark cache (raise from it to cancel); cancel: set to stop training after
    the current step; bars: tqdm bars on stderr while finding faces."""

    log: Callable[[str], None] = _quiet
    on_event: Callable[[dict], None] | None = None
    on_extract: Callable[[int, int], None] | None = None
    cancel: threading.Event | None = None
    bars: bool = False


@dataclass
class PrepareOptions:
    """`ferlib.data.tensors.prepare` options shared by every dataset of a run."""

    drop_unknown: bool = False
    workers: int | None = None
    cache_dir: str | Path | None = None
    extractor_kwargs: dict | None = None


@dataclass
class Outcome:
    """A finished run: the model (on the CPU), its card (the schema above), the prepared splits,
    the training result (None for a personal adaptation) and the val/test metrics."""

    model: FerModel
    card: dict
    sets: dict[str, Prepared]
    result: TrainResult | None
    metrics: dict[str, dict]


def prepare_data(data: TrainingData, spec: InputSpec, classes: Sequence[str],
                 options: PrepareOptions | None = None, progress: Progress | None = None) -> Prepared:
    """One Prepared over every dataset, the train-only ones forced into the train split."""
    options, progress = options or PrepareOptions(), progress or Progress()
    parts = []
    for ds, only in [*((d, False) for d in data.datasets), *((d, True) for d in data.train_only)]:
        ds = Dataset.of(ds)
        if only:
            ds = ds.with_table(ds.table.assign(split="train"))
        progress.log(f"data {ds.root} ({ds.kind or '?'}): {len(ds)} samples, "
                     f"splits {ds.table['split'].value_counts().to_dict()}")
        try:
            p = prepare(ds, spec, classes, drop_unknown=options.drop_unknown, workers=options.workers,
                        cache_dir=options.cache_dir, progress=progress.bars, callback=progress.on_extract,
                        extractor_kwargs=options.extractor_kwargs)
        except InputError as e:
            raise InputError(f"{'extra training data' if only else 'dataset'} {ds.root}: {e}") \
                from None
        if p.info["dropped_labels"]:
            progress.log(f"  left out labels not among {list(classes)}: {p.info['dropped_labels']}")
        if p.info["no_crop"]:
            progress.log(f"  left out {p.info['no_crop']} landmarks-only samples (the model needs crops)")
        parts.append(p)
    return concat_prepared(parts) if len(parts) > 1 else parts[0]


def training_splits(prep: Prepared, require: Sequence[str] = ("train", "val")) -> dict[str, Prepared]:
    """{split: Prepared} of the non-empty splits; InputError when a `require`d one is empty."""
    sets = split_prepared(prep)
    for need in require:
        if need not in sets:
            raise InputError(f"the data has no {need!r} rows (splits: {sorted(sets)}); add samples"
                             + (" or --val-frac" if need == "val" else ""))
    return sets


def data_card(data: TrainingData, sets: dict[str, Prepared]) -> dict:
    """card["data"] of a run (the module docstring lists the fields)."""
    entries = [(Dataset.of(d), "splits") for d in data.datasets] + \
        [(Dataset.of(d), "train only") for d in data.train_only]
    card = {"names": [Path(ds.root).name for ds, _ in entries],
            "datasets": [{"name": Path(ds.root).name, "kind": ds.kind,
                          "sha256": dataset_sha256(ds), "images": len(ds), "use": use} for ds, use in entries],
            "splits": dict(SPLIT_TEXT), "split_rules": dict(SPLIT_RULES),
            "n": {k: len(v) for k, v in sets.items()},
            "detection_rate": {k: v.detection_rate for k, v in sets.items()}}
    if data.studio_sessions is not None:
        card["studio_sessions"] = [int(s) for s in data.studio_sessions]
    return card


def score_splits(model, sets: dict[str, Prepared], tta_flip: bool, splits: Sequence[str] = ("val", "test"),
                 device: str | None = None) -> dict[str, dict]:
    """`ferlib.training.evaluate.evaluate` of each of `splits` that has a face, on `device` (the training
    device; the model is back on the CPU afterwards)."""
    model.to(device or "cpu")
    try:
        return {name: evaluate(model, classes=list(sets[name].classes), tta_flip=tta_flip, **sets[name].eval_inputs())
                for name in splits if name in sets and sets[name].detected.any()}
    finally:
        model.to("cpu")


def training_spec(model: FerModel, **overrides) -> InputSpec:
    """The input spec a new model trains with (`spec_for_model`); a model with clarity strata (the
    second source design) gets placeholder edges, replaced by `train_new` with the training crops'
    quantiles."""
    n_strata = model.hparams.get("n_strata", 1)
    if n_strata > 1:
        overrides.setdefault("clarity_edges", tuple(float(i) for i in range(n_strata - 1)))
    return spec_for_model(model, **overrides)


def _clarity_strata(spec: InputSpec, sets: dict[str, Prepared], n_strata: int, progress: Progress):
    """Clarity-stratum edges: the Laplacian-variance quantiles of the training faces' crops,
    splitting them into `n_strata` equal groups; spec and sets updated."""
    train_rows = sets["train"]
    if train_rows.crops is None:
        raise InputError("clarity strata need face crops: the model's input spec has none")
    scores = clarity_score(train_rows.crops[train_rows.detected])
    edges = tuple(float(q) for q in np.quantile(scores, np.arange(1, n_strata) / n_strata))
    spec = replace(spec, clarity_edges=edges)
    progress.log(f"clarity strata: edges {[round(e, 1) for e in edges]} (training-crop quantiles)")
    return spec, {k: replace(v, spec=spec) for k, v in sets.items()}


def teacher_targets(teacher, data: TrainingData, classes: Sequence[str], student_train: Prepared,
                    options: PrepareOptions, progress: Progress, threads: int = 1) -> tuple[torch.Tensor, dict]:
    """Distillation targets: the teacher's class probabilities of every row the student trains on,
    computed once. The same datasets are prepared with the teacher's own input spec (e.g. face
    crops); rows align by position (checked by path). Rows the teacher has no input for get the
    one-hot label. Returns ((N_student, C) probabilities, card record)."""
    path, model, card = read_checkpoint(teacher)
    tclasses = list(card["classes"])
    missing = [c for c in classes if c not in tclasses]
    if missing:
        raise InputError(f"teacher {teacher} has classes {tclasses}; it has no {missing}")
    tta = card_tta_flip(card)
    progress.log(f"teacher {card['model']['name']} ({path}; flip TTA {tta}): preparing its inputs")
    tt = training_splits(prepare_data(data, card_spec(card), classes, options, progress))["train"]
    if len(tt) != len(student_train) or not np.array_equal(tt.df["path"].astype(str).to_numpy(),
                                                             student_train.df["path"].astype(str).to_numpy()):
        raise InputError("the teacher's rows do not line up with the student's (different data after preparing)")
    rows = student_train.detected
    both = rows & tt.detected
    if threads > 0:
        torch.set_num_threads(threads)
    probs = teacher_probabilities(model, tt.tensor_set(both), tta_flip=tta)[:, [tclasses.index(c) for c in classes]]
    probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
    labels = torch.as_tensor(student_train.labels[rows]).long()
    out = torch.nn.functional.one_hot(labels, len(classes)).float()
    out[torch.from_numpy(both[rows])] = probs
    agree = float((probs.argmax(1) == labels[torch.from_numpy(both[rows])]).float().mean())
    progress.log(f"teacher probabilities for {int(both.sum())} of {int(rows.sum())} training faces (agrees "
                 f"with the label on {agree:.1%})")
    record = {"model": card["model"]["name"], "checkpoint": Path(path).name,
              "weights_sha256": card.get("weights_sha256"), "tta_flip": tta, "rows": int(both.sum()),
              "rows_one_hot": int((rows & ~tt.detected).sum()),
              "train_agreement": agree}
    return out, record


def _raw_landmarks(train_rows: Prepared, model: FerModel, config: TrainConfig):
    """The training faces' raw landmarks for the 3-D pose augmentation of landmark inputs."""
    if config.pose_augment > 0 and "landmarks" in model.input_keys:
        return train_rows.landmarks[train_rows.detected]
    return None


def _validation(sets: dict[str, Prepared], progress: Progress) -> Prepared:
    if "val" in sets:
        return sets["val"]
    progress.log("no validation rows: early stopping watches the training rows")
    return sets["train"]


def _scored(model, sets: dict[str, Prepared], tta: bool, progress: Progress, run_dir, splits=("val", "test"),
            device: str | None = None) -> dict[str, dict]:
    """`score_splits`, each split's metrics written to the run folder (when there is one) and logged."""
    metrics = score_splits(model, sets, tta, splits=splits, device=device)
    for name, m in metrics.items():
        if run_dir is not None:
            save_metrics(m, Path(run_dir) / f"{name}_metrics.json")
        progress.log(f"{name}: accuracy {m['accuracy_all']:.4f} over {m['n']} samples (misses counted as wrong; "
                     f"detection rate {m['detection_rate']:.4f}), on detected faces {m['accuracy']:.4f}, "
                     f"macro F1 {m['macro_f1_all']:.4f}")
    return metrics


def _finish(model, card: dict, sets, result: TrainResult, data: TrainingData, tta: bool, progress: Progress,
            run_dir: Path | None) -> Outcome:
    metrics = _scored(model, sets, tta, progress, run_dir, device=result.device)
    card["data"] = data_card(data, sets)
    if "val" not in sets:
        card["data"]["splits"] = {**card["data"]["splits"], "val": "none (too few samples): early stopping "
                                                                   "watched the training rows"}
    card["metrics"] = {"val_at_best_epoch": result.best, **metrics, "note": METRICS_NOTE}
    card["training"] = {**card.get("training", {}), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                        "stopped_early": result.stopped_early, "elapsed_s": result.elapsed_s,
                        "device": result.device}
    return Outcome(model, card, sets, result, metrics)


def train_new(model: FerModel, spec: InputSpec, classes: Sequence[str], data: TrainingData, config: TrainConfig, *,
              run_dir=None, options: PrepareOptions | None = None, progress: Progress | None = None,
              teacher=None, require_val: bool = True, processes: int = 1, resume: bool = False) -> Outcome:
    """Train a new model (`create_model`) with `spec` (`training_spec`) on `data`; teacher: a
    classifier to distil from (config.distill_weight); require_val False: data without a val split
    train with early stopping on the training rows (the Train page's few recordings); processes > 1:
    data-parallel on that many CPU processes (`ferlib.training.ddp.train_ddp`); resume: go on from run_dir's
    last finished epoch (`ferlib.training.train.train`)."""
    options, progress = options or PrepareOptions(), progress or Progress()
    config = config.resolved()
    if resume and processes > 1:
        raise InputError("resume is for single-process runs (no --ddp)")
    if config.distill_weight > 0 and teacher is None:
        raise InputError("distillation (distill_weight > 0) needs a teacher checkpoint")
    sets = training_splits(prepare_data(data, spec, classes, options, progress),
                           ("train", "val") if require_val else ("train",))
    n_strata = model.hparams.get("n_strata", 1)
    if n_strata > 1:
        spec, sets = _clarity_strata(spec, sets, n_strata, progress)
    counts = {k: len(v) for k, v in sets.items()}
    progress.log(f"{model.registry_name}: {count_parameters(model)} parameters, classes {list(classes)}, "
                 f"{counts} samples, device {config.device}")
    training: dict = {"config": config.to_dict()}
    targets = None
    if config.distill_weight > 0:
        targets, training["teacher"] = teacher_targets(teacher, data, classes, sets["train"], options, progress,
                                                       threads=config.num_threads)
    train_rows = sets["train"]
    raw = _raw_landmarks(train_rows, model, config)
    if processes > 1:
        training["data_parallel"] = {"processes": processes, "backend": "gloo (torch DistributedDataParallel)"}
    fit = partial(train, resume=resume) if processes <= 1 else partial(train_ddp, world=processes)
    result = fit(model, train_rows.tensor_set(), _validation(sets, progress).tensor_set(), config,
                 callback=progress.on_event, cancel=progress.cancel, run_dir=run_dir, teacher_probs=targets,
                 raw_landmarks=raw)
    card = make_card(model, classes, spec, training=training)
    if result.cancelled:
        return Outcome(model, card, sets, result, {})
    return _finish(model, card, sets, result, data, config.tta_flip, progress, run_dir)


def finetune_base(base, data: TrainingData, config: TrainConfig, *, classes: Sequence[str] | None = None,
                  run_dir=None, options: PrepareOptions | None = None, progress: Progress | None = None,
                  require_val: bool = True, resume: bool = False) -> Outcome:
    """The classic fine-tune of checkpoint `base` (a path or a shipped name): validation split,
    early stopping, a new head for new `classes`, config.freeze_backbone; resume as in `train_new`.
    For big data; a person's few recordings adapt better with `adapt_personal`."""
    options, progress = options or PrepareOptions(), progress or Progress()
    config = config.resolved()
    path, base_model, base_card = read_checkpoint(base)
    classes = list(classes) if classes else list(base_card["classes"])
    sets = training_splits(prepare_data(data, card_spec(base_card), classes, options, progress),
                           ("train", "val") if require_val else ("train",))
    progress.log(f"fine-tuning {base_card['model']['name']}: {len(sets['train'])} + {len(sets.get('val', []))} "
                 f"samples, device {config.device}")
    model, card, result = finetune(path, sets["train"].tensor_set(), _validation(sets, progress).tensor_set(),
                                   config, classes=classes, callback=progress.on_event, cancel=progress.cancel,
                                   run_dir=run_dir, raw_landmarks=_raw_landmarks(sets["train"], base_model, config),
                                   resume=resume)
    if result.cancelled:
        return Outcome(model, card, sets, result, {})
    return _finish(model, card, sets, result, data, config.tta_flip, progress, run_dir)


def adapt_personal(base, data: TrainingData, config: AdaptConfig, *, run_dir=None,
                   options: PrepareOptions | None = None, progress: Progress | None = None) -> Outcome:
    """Few-shot personal adaptation (`ferlib.training.personal.adapt`) of checkpoint `base` on every train
    and val row, a fixed schedule, no early stopping; the test split, when the data have one
    (Studio sessions), is scored."""
    options, progress = options or PrepareOptions(), progress or Progress()
    path, _, base_card = read_checkpoint(base)
    classes = list(base_card["classes"])
    sets = split_prepared(prepare_data(data, card_spec(base_card), classes, options, progress))
    parts = [sets[k] for k in ("train", "val") if k in sets]
    if not parts:
        raise InputError(f"the data has no train or val rows to adapt to (splits: {sorted(sets)})")
    fit = concat_prepared(parts) if len(parts) > 1 else parts[0]
    progress.log(f"adapting {base_card['model']['name']} ({config.method}) to {len(fit)} samples")
    model, card, report = adapt(path, fit.tensor_set(), config, cancel=progress.cancel)
    progress.log(f"adapted in {report['seconds']:.1f} s; samples per emotion {report['per_class']}"
                 + (f"; no samples of {report['classes_without_samples']} (those keep the base model's behaviour)"
                    if report["classes_without_samples"] else ""))
    tta = bool(card["training"]["config"]["tta_flip"])
    metrics = _scored(model, sets, tta, progress, run_dir, splits=("test",))
    card["data"] = {**data_card(data, sets), "adaptation": "every train and val row"}
    card["metrics"] = {**metrics, "note": METRICS_NOTE}
    card["training"] = {**card["training"], "elapsed_s": report["seconds"], "device": "cpu"}
    result = TrainResult(epochs_run=1, elapsed_s=report["seconds"], device="cpu")
    return Outcome(model, card, sets, result, metrics)


def save_outcome(outcome: Outcome, stem, command: str | None = None) -> tuple[Path, Path]:
    """Write the model and its card (STEM.safetensors, STEM.json); `command` goes to the card."""
    if command is not None:
        outcome.card["training"] = {**outcome.card.get("training", {}), "command": command}
    return save_checkpoint(outcome.model, Path(stem), outcome.card)


__all__ = ["METRICS_NOTE", "Outcome", "PrepareOptions", "Progress", "SPLIT_RULES", "SPLIT_TEXT", "TrainingData",
           "adapt_personal", "data_card", "finetune_base", "prepare_data", "save_outcome", "score_splits",
           "teacher_targets", "train_new", "training_spec", "training_splits"]
