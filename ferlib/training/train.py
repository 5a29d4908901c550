"""Training and fine-tuning with a progress callback, cancellation, early stopping and a run folder.

The defaults are the first source design's setup: Adam, lr 1e-3 decayed linearly to 1/10,
early stopping on validation, cross-entropy with normalised inverse-frequency class weights.
Options from the other designs: AdamW, cosine annealing, label smoothing, a weighted sampler,
test-time flip averaging. Same data + same seed + same thread count -> the same weights (on the
CPU; on CUDA, `TrainConfig.device`, forward passes run in bf16 autocast and are not bit-reproducible).

Knowledge distillation (`TrainConfig.distill_weight` > 0 with `teacher_probs`): the loss is
(1 - w) * CE(label) + w * T^2 * KL(teacher_T || student_T), the teacher's probabilities computed once
before training (`teacher_probabilities`), one row per training sample. Pose augmentation
(`TrainConfig.pose_augment` > 0 with `raw_landmarks`): ferlib.inputs.PoseAugmenter rotates each
sample's raw 3-D landmarks and rebuilds its normalised landmarks. Both off (the defaults): a seed
gives exactly the weights it gave before they existed.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ferlib.training.device import DEVICES, autocast, resolve_device, to_device
from ferlib.errors import InputError
from ferlib.training.evaluate import keypoint_nme, macro_f1, mean_recall, predict_outputs
from ferlib.inference.checkpoint import base_of, card_spec, load_checkpoint
from ferlib.inputs import Augmenter, InputSpec, PoseAugmenter, TensorSet, spec_for_model
from ferlib.models.registry import FerModel
from ferlib.fsutil import atomic_write_bytes

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("linear", "cosine", "constant", "onecycle")
ONECYCLE_WARMUP = 0.3  # share of the steps "onecycle" spends rising from lr/25 to lr
MONITORS = ("val_acc", "val_f1", "val_recall", "val_loss")


@dataclass
class TrainConfig:
    """Training settings; saved as config.json in the run folder and in the model card.

    schedule "linear" decays lr to lr/10 over all steps, "cosine" anneals to lr/100, "onecycle" rises
    linearly from lr/25 to lr over the first 30 % of the steps, then anneals (cosine) to lr/10^4.
    optimizer "sgd" is SGD with Nesterov momentum 0.9 (weight_decay as L2), the GPU recipe
    (scripts/gpu_train.py: lr 0.1, onecycle).
    patience: epochs without improvement of `monitor` before stopping (0 = never stop early).
    weight_decay is L2 (Adam) or decoupled decay (AdamW). dropout, when set, overrides every
    nn.Dropout's rate. augment: ferlib.inputs.Augmenter during training (classification only).
    num_threads > 0 sets torch's intra-op threads for the run.
    device: auto | cpu | cuda; "auto" = cuda when torch sees a CUDA GPU, else cpu. `resolved()` (and
    every run) replaces "auto" with the device used, so saved configs name it; old configs without
    the field load as "auto".
    distill_weight w in [0, 1]: share of the distillation term (needs teacher_probs in train());
    distill_temperature T > 0 softens teacher and student alike; the term is scaled by T^2.
    pose_augment: max |yaw| in degrees of the pose augmentation; 0 = off. Landmark inputs:
    ferlib.inputs.PoseAugmenter turns the raw 3-D landmarks (pitch up to a third of it; needs
    raw_landmarks in train()); image inputs: the Augmenter turns half the face crops as a plane
    (`turn`, with augment on).
    soft_targets: learn from the training data's label distributions (`TensorSet.targets`, FER+'s votes)
    with `SoftTargetLoss` when it has them; False trains on the hard labels alone.
    class_weight_power p: class weights (and sampler weights) are the inverse class frequency to the
    power p, normalised to mean 1: 1 = full balance (the default), 0.5 = square root, 0 = none.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "linear"
    weight_decay: float = 0.0
    dropout: float | None = None
    class_weights: bool = True
    label_smoothing: float = 0.0
    weighted_sampler: bool = False
    augment: bool = True
    tta_flip: bool = False
    patience: int = 5
    monitor: str = "val_acc"
    seed: int = 0
    freeze_backbone: bool = False
    num_threads: int = 0
    eval_batch_size: int = 512
    device: str = "auto"
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    pose_augment: float = 0.0
    soft_targets: bool = True
    class_weight_power: float = 1.0

    def __post_init__(self):
        checks = [(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
                  (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
                  (self.monitor in MONITORS, f"monitor must be one of {MONITORS}"),
                  (self.epochs >= 1 and self.batch_size >= 2, "epochs >= 1 and batch_size >= 2"),
                  (self.lr > 0 and 0 <= self.label_smoothing < 1, "lr > 0 and 0 <= label_smoothing < 1"),
                  (self.device in DEVICES, f"device must be one of {DEVICES}"),
                  (0 <= self.distill_weight <= 1 and self.distill_temperature > 0,
                   "0 <= distill_weight <= 1 and distill_temperature > 0"),
                  (0 <= self.pose_augment <= 90, "0 <= pose_augment <= 90 (degrees)"),
                  (0 <= self.class_weight_power <= 1, "0 <= class_weight_power <= 1")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise InputError(f"bad TrainConfig {asdict(self)}: {'; '.join(bad)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self) -> "TrainConfig":
        """A copy whose device is the one a run uses ("auto" -> cpu or cuda); InputError for "cuda"
        when torch sees no CUDA GPU."""
        return replace(self, device=resolve_device(self.device))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"TrainConfig has no fields {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """Outcome of a run; the model passed to train() holds the best validation weights. device: the
    device the run used ("cpu" or "cuda"); resumed_after_epoch: the epoch a resumed run went on from."""

    best_epoch: int = 0
    best: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    cancelled: bool = False
    elapsed_s: float = 0.0
    device: str = ""
    resumed_after_epoch: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Shard:
    """This process's part of a data-parallel run (ferlib.training.ddp launches the ranks).

    Every rank draws the same global order and cuts each global batch of config.batch_size rows
    `rank::world` (a DistributedSampler shard of every batch, so a run sees the very batches of a
    single-process run); `wrap` gives the model whose backward averages the gradients over the
    ranks (DistributedDataParallel), `reduce` sums a list of floats over the ranks. Augmentation and
    dropout draw from per-rank seeds."""

    rank: int
    world: int
    wrap: Callable[[nn.Module], nn.Module]
    reduce: Callable[[list[float]], list[float]]


def class_weights(labels: torch.Tensor, num_classes: int, targets: torch.Tensor | None = None,
                  power: float = 1.0) -> torch.Tensor:
    """Normalised inverse class frequency to the power `power` (mean 1 over the classes present; 0 for
    absent ones). With soft `targets` ((N, C) label distributions) a class's frequency is its summed
    probability mass."""
    if targets is not None:
        counts = targets.double().sum(0)
        counts = torch.where(counts > 1e-9, counts, torch.zeros_like(counts))
    else:
        counts = torch.bincount(labels.long(), minlength=num_classes).double()
    w = torch.where(counts > 0, 1.0 / counts.clamp(min=1e-9), torch.zeros_like(counts))
    if power != 1.0:
        w = w ** power
    return (w / w[counts > 0].mean()).float()


class SoftTargetLoss(nn.Module):
    """Cross-entropy against label distributions: sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic,
    t smoothed as (1 - eps) t + eps / C. With one-hot targets and eps = 0 it is nn.CrossEntropyLoss(weight)
    exactly (weighted mean); w = None weighs every class 1."""

    weight: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = targets.float()
        if self.label_smoothing > 0:
            t = (1 - self.label_smoothing) * t + self.label_smoothing / t.shape[1]
        logp = torch.log_softmax(logits.float(), dim=1)
        wt = t if self.weight is None else t * self.weight[None, :]
        return -(wt * logp).sum() / wt.sum().clamp_min(1e-12)


def _lr_factor(schedule: str, t: int, total: int) -> float:
    frac = t / max(total, 1)
    if schedule == "linear":
        return 1.0 - 0.9 * frac
    if schedule == "cosine":
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac))
    if schedule == "onecycle":
        if frac < ONECYCLE_WARMUP:
            return 0.04 + 0.96 * frac / ONECYCLE_WARMUP
        down = (frac - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * down))
    return 1.0


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=float).encode())


def _on_device(data: TensorSet, device: torch.device) -> TensorSet:
    """`data` itself on the CPU; else a copy with its tensors and labels on `device` (non-blocking)."""
    if device.type == "cpu":
        return data
    return TensorSet(to_device(data.tensors, device), data.labels.to(device, non_blocking=True), data.spec,
                     None if data.targets is None else data.targets.to(device, non_blocking=True))


def _validate(model, data, config, spec, criterion_eval) -> dict:
    out = predict_outputs(model, data, batch_size=config.eval_batch_size,
                          tta_flip=config.tta_flip and model.task == "classification", spec=spec)
    labels = data.labels.cpu()
    if model.task == "keypoints":
        loss = float(nn.functional.mse_loss(out, labels.float()))
        return {"val_loss": loss, "val_acc": None, "val_f1": None, "val_recall": None,
                "val_nme": keypoint_nme(out, labels)}
    loss = float(criterion_eval(torch.log(out.clamp_min(1e-8)), labels.long()))
    pred = out.argmax(1).numpy()
    y = labels.numpy()
    return {"val_loss": loss, "val_acc": float((pred == y).mean()),
            "val_f1": macro_f1(y, pred, out.shape[1]), "val_recall": mean_recall(y, pred, out.shape[1])}


def train(model: FerModel, train_data: TensorSet, val_data: TensorSet, config: TrainConfig,
          callback: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
          run_dir=None, teacher_probs: torch.Tensor | None = None,
          raw_landmarks=None, shard: Shard | None = None, resume: bool = False) -> TrainResult:
    """Train `model` in place; it ends holding the best-validation weights (in eval mode).

    callback gets dicts {event: "resumed"|"step"|"epoch"|"done"|"cancelled", epoch, step, steps, train_loss,
    val_loss, val_acc, val_f1, val_recall, lr, elapsed_s}. cancel: set it to stop after the current step.
    run_dir: config.json (at start), curves.json (every epoch), metrics.json (at the end).
    config.device (resolved; run_dir's config.json and result.device name it): on CUDA the model,
    the data and the augmentation go to the GPU and forward passes run under bf16 autocast; the
    model is back on the CPU when train returns or raises. On the CPU nothing moves.
    teacher_probs: (N, C) a teacher's class probabilities (temperature 1) of each training sample, in
    train_data's row order; used when config.distill_weight > 0 (`teacher_probabilities` makes it).
    raw_landmarks: (N, 478, 3) pixel landmarks of each training sample (row order), for
    config.pose_augment > 0.
    shard: this process's rank of a data-parallel run (`Shard`; ferlib.training.ddp.train_ddp makes them).
    With a run_dir (single process), `resume.pt` there holds the state after each finished epoch
    (weights, optimizer, best so far, random generators); `resume=True` goes on from it (a fresh
    start when there is none), giving the weights an uninterrupted run gives. The settings, model
    and data must be the ones it was made with (RESUME_MAY_CHANGE excepted), else InputError.
    """
    config = config.resolved()
    try:
        return _train(model, train_data, val_data, config, callback, cancel, run_dir, teacher_probs, raw_landmarks,
                      shard, resume)
    finally:
        model.to("cpu")  # checkpoints are saved from CPU tensors; a no-op for CPU runs


def _check_distill(model, train_data: TensorSet, config: TrainConfig, teacher_probs):
    """teacher_probs as a float32 (N, C) CPU tensor when distillation is on, else None."""
    if config.distill_weight <= 0:
        return None
    if teacher_probs is None:
        raise InputError(f"distill_weight {config.distill_weight} needs the teacher's probabilities (teacher_probs)")
    if model.task != "classification":
        raise InputError("distillation is for classifiers")
    t = torch.as_tensor(teacher_probs).float()
    if t.shape != (len(train_data), model.num_classes):
        raise InputError(f"teacher_probs has shape {tuple(t.shape)}; expected ({len(train_data)}, "
                         f"{model.num_classes}): one row per training sample, one column per class")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise InputError("teacher_probs must be finite probabilities")
    return t / t.sum(1, keepdim=True).clamp_min(1e-12)


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), batch mean: teacher_T = softmax(log(teacher_probs) / T)
    (= the teacher's logits / T), student_T = softmax(logits / T)."""
    log_t = torch.log_softmax(torch.log(teacher_probs.clamp_min(1e-8)) / temperature, dim=1)
    log_s = torch.log_softmax(logits.float() / temperature, dim=1)
    kl = nn.functional.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return kl * temperature ** 2


def teacher_probabilities(teacher, data: TensorSet, tta_flip: bool = False, batch_size: int = 512) -> torch.Tensor:
    """(N, C) class probabilities of a teacher (a FerModel or a Runner) for every row of `data`
    (its own input kind, e.g. face crops), computed once before a student's training."""
    return predict_outputs(teacher, data, batch_size=batch_size, tta_flip=tta_flip).float()


@dataclass
class _Loop:
    """What every step of one run needs, built once by `_setup`."""

    model: FerModel
    net: nn.Module
    opt: torch.optim.Optimizer
    criterion: nn.Module
    train_set: TensorSet
    val_set: TensorSet
    spec: InputSpec
    classify: bool
    steps: int
    total: int
    g: torch.Generator
    order_g: torch.Generator
    device: torch.device
    sample_w: torch.Tensor | None = None
    augment: Augmenter | None = None
    pose: PoseAugmenter | None = None
    raw_landmarks: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    targets: torch.Tensor | None = None


@dataclass
class _Progress:
    """Where a run stands after its last finished epoch: what `resume.pt` holds besides the weights."""

    t: int = 0
    best_score: float = -math.inf
    best_state: dict | None = None
    bad_epochs: int = 0
    elapsed_before: float = 0.0
    result: TrainResult = field(default_factory=TrainResult)


def _check_labels(model: FerModel, train_data: TensorSet, val_data: TensorSet) -> None:
    if len(train_data) < 2:
        raise InputError(f"training set has {len(train_data)} samples; need at least 2")
    if model.task != "classification":
        return
    for name, data in (("training", train_data), ("validation", val_data)):
        if not 0 <= int(data.labels.min()) <= int(data.labels.max()) < model.num_classes:
            raise InputError(f"{name} labels span {int(data.labels.min())}..{int(data.labels.max())} but the model has "
                             f"{model.num_classes} classes: the class list does not match the data")


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def _setup(model: FerModel, train_data: TensorSet, val_data: TensorSet, config: TrainConfig, spec: InputSpec,
           teacher_probs, raw_landmarks, shard: Shard | None) -> _Loop:
    """Seeds, device, optimizer, loss and augmenters of a run (the model's trainable parameters set)."""
    soft = _check_distill(model, train_data, config, teacher_probs)
    rank = shard.rank if shard is not None else 0
    torch.manual_seed(config.seed + rank)
    g = torch.Generator().manual_seed(config.seed + rank)
    order_g = g if shard is None else torch.Generator().manual_seed(config.seed)  # one order for every rank
    classify = model.task == "classification"
    if config.dropout is not None:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = config.dropout
    if config.freeze_backbone:
        for p in model.backbone_parameters():
            p.requires_grad_(False)
    device = torch.device(config.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    labels = train_data.labels
    targets = train_data.targets if classify and config.soft_targets else None
    if targets is not None and targets.shape[1] != model.num_classes:
        raise InputError(f"training targets have {targets.shape[1]} classes but the model has {model.num_classes}")
    criterion: nn.Module
    sample_w = None
    if classify:
        per_class = class_weights(labels, model.num_classes, targets, power=config.class_weight_power)
        weight = per_class if config.class_weights else None
        if targets is not None:  # label distributions (FER+ votes), hard-label rows as one-hot
            criterion = SoftTargetLoss(weight, config.label_smoothing).to(device)
            sample_w = targets.float() @ per_class if config.weighted_sampler else None
        else:
            criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing).to(device)
            sample_w = per_class[labels.long()] if config.weighted_sampler else None
    else:
        criterion = nn.MSELoss()
    turn = config.pose_augment if "image" in model.input_keys else 0.0  # face crops turn as a plane
    pose, raw = None, None
    if config.pose_augment > 0 and "landmarks" in model.input_keys:  # landmarks turn in 3-D
        if raw_landmarks is None or len(raw_landmarks) != len(train_data):
            raise InputError(f"pose_augment needs raw_landmarks, one (478, 3) set per training sample "
                             f"({len(train_data)})")
        pose, raw = PoseAugmenter(spec, max_yaw=config.pose_augment), torch.as_tensor(raw_landmarks).float()
    n = len(train_data)
    min_last = 2 * (shard.world if shard is not None else 1)  # >= 2 rows per rank (batch norm)
    steps = n // config.batch_size + (1 if n % config.batch_size >= min_last else 0)
    return _Loop(model=model, net=model if shard is None else shard.wrap(model),
                 opt=_optimizer(config, params), criterion=criterion,
                 train_set=_on_device(train_data, device), val_set=_on_device(val_data, device), spec=spec,
                 classify=classify, steps=steps, total=steps * config.epochs, g=g, order_g=order_g, device=device,
                 sample_w=sample_w, augment=Augmenter(spec, turn=turn) if config.augment and classify else None,
                 pose=pose, raw_landmarks=raw, soft=None if soft is None else soft.to(device),
                 targets=None if targets is None else targets.to(device))


def _run_epoch(loop: _Loop, config: TrainConfig, epoch: int, progress: _Progress, shard: Shard | None,
               cancel, emit) -> tuple[float, int]:
    """One pass over the training rows; (summed loss, rows seen), or stops early when `cancel` is set
    (progress.result.cancelled)."""
    model = loop.model
    model.train()
    if config.freeze_backbone:
        for m in model.backbone_modules():
            m.eval()
    n = len(loop.train_set)
    order = (torch.multinomial(loop.sample_w, n, replacement=True, generator=loop.order_g)
             if loop.sample_w is not None else torch.randperm(n, generator=loop.order_g))
    loss_sum, seen = 0.0, 0
    for step in range(loop.steps):
        if cancel is not None and cancel.is_set():
            progress.result.cancelled = True
            break
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        if shard is not None:
            idx = idx[shard.rank::shard.world]
        idx_on = idx.to(loop.device, non_blocking=True)
        batch = loop.train_set.batch(idx_on)
        if loop.pose is not None and loop.raw_landmarks is not None:  # first: it rebuilds normalised landmarks
            batch = loop.pose(batch, loop.raw_landmarks[idx], loop.g)
        if loop.augment is not None:
            batch = loop.augment(batch, loop.g)
        for pg in loop.opt.param_groups:
            pg["lr"] = config.lr * _lr_factor(config.schedule, progress.t, loop.total)
        labels = loop.train_set.labels[idx_on]
        target = (loop.targets[idx_on] if loop.targets is not None else labels.long()) if loop.classify \
            else labels.float()
        with autocast(loop.device):
            out = loop.net(batch)
            loss = loop.criterion(out, target)
            if loop.soft is not None:
                w_kd = config.distill_weight
                loss = (1 - w_kd) * loss + w_kd * distill_loss(out, loop.soft[idx_on], config.distill_temperature)
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        loop.opt.step()
        progress.t += 1
        loss_sum += loss.item() * len(idx)
        seen += len(idx)
        emit("step", epoch=epoch, step=step + 1, train_loss=loss_sum / seen)
    return loss_sum, seen


# ----------------------------------------------------------------------------- resume
RESUME_FILE = "resume.pt"
# TrainConfig fields a resumed run may change: they do not change what is computed.
RESUME_MAY_CHANGE = ("num_threads", "eval_batch_size", "device")


def _data_fingerprint(data: TensorSet) -> str:
    """Cheap identity of a TensorSet: sizes, labels and each input's shape and sum."""
    h = hashlib.sha256()
    h.update(data.labels.detach().cpu().numpy().tobytes())
    if data.targets is not None:
        h.update(data.targets.detach().cpu().numpy().tobytes())
    for key in sorted(data.tensors):
        x = data.tensors[key]
        h.update(f"{key}{tuple(x.shape)}{float(x.detach().double().sum()):.6e}".encode())
    return h.hexdigest()


def _resume_key(model: FerModel, config: TrainConfig, train_data: TensorSet, val_data: TensorSet) -> dict:
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUME_MAY_CHANGE}
    return {"config": json.dumps(settings, sort_keys=True), "model": json.dumps(model.config(), sort_keys=True),
            "train": _data_fingerprint(train_data), "val": _data_fingerprint(val_data)}


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _save_resume(path: Path, key: dict, epoch: int, loop: _Loop, progress: _Progress, elapsed: float) -> None:
    """Everything needed to go on after `epoch` as if never stopped, written atomically."""
    rng = {"g": loop.g.get_state(), "order_g": loop.order_g.get_state(), "torch": torch.get_rng_state()}
    if loop.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(loop.device)
    state = {"format": 1, "key": key, "epoch": epoch, "t": progress.t, "model": _cpu_state(loop.model.state_dict()),
             "optimizer": loop.opt.state_dict(), "best_score": progress.best_score,
             "best_state": None if progress.best_state is None else _cpu_state(progress.best_state),
             "bad_epochs": progress.bad_epochs, "elapsed_s": elapsed, "result": progress.result.to_dict(), "rng": rng}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_resume(path: Path, key: dict, loop: _Loop) -> tuple[int, _Progress]:
    """(last finished epoch, progress) of a saved run, its weights, optimizer and random state restored
    into `loop`; InputError when the run was for other settings, another model or other data."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: say which
        raise InputError(f"cannot resume from {path}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != 1:
        raise InputError(f"cannot resume from {path}: not a ferlib training state")
    differ = [k for k in key if state["key"].get(k) != key[k]]
    if differ:
        raise InputError(f"cannot resume from {path}: the run was made with other {', '.join(differ)} "
                         f"(only {', '.join(RESUME_MAY_CHANGE)} may change); start a new run folder")
    loop.model.load_state_dict(state["model"])
    loop.opt.load_state_dict(state["optimizer"])
    loop.g.set_state(state["rng"]["g"])
    loop.order_g.set_state(state["rng"]["order_g"])
    torch.set_rng_state(state["rng"]["torch"])
    if loop.device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], loop.device)
    result = TrainResult(**state["result"])
    best = state["best_state"]
    progress = _Progress(t=int(state["t"]), best_score=float(state["best_score"]),
                         best_state=None if best is None else to_device(best, loop.device),
                         bad_epochs=int(state["bad_epochs"]), elapsed_before=float(state["elapsed_s"]), result=result)
    return int(state["epoch"]), progress


# ----------------------------------------------------------------------------- the run
def _train(model: FerModel, train_data: TensorSet, val_data: TensorSet, config: TrainConfig,
           callback, cancel, run_dir, teacher_probs=None, raw_landmarks=None, shard=None,
           resume: bool = False) -> TrainResult:
    """train()'s run on the resolved config.device."""
    _check_labels(model, train_data, val_data)
    t0 = time.monotonic()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    spec = train_data.spec or spec_for_model(model)
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume and (run_dir is None or shard is not None):
        raise InputError("resume needs a run folder and a single-process run")
    loop = _setup(model, train_data, val_data, config, spec, teacher_probs, raw_landmarks, shard)
    resume_path = run_dir / RESUME_FILE if run_dir is not None and shard is None else None
    key = _resume_key(model, config, train_data, val_data) if resume_path is not None else {}
    done, progress = 0, _Progress(result=TrainResult(device=config.device))
    if resume and resume_path is not None and resume_path.is_file():
        done, progress = _load_resume(resume_path, key, loop)
        progress.result.device = config.device
    result = progress.result
    if run_dir is not None:
        _write_json(run_dir / "config.json", {"train": config.to_dict(), "model": model.config(),
                                              "input": spec.to_dict(), "n_train": len(train_data),
                                              "n_val": len(val_data), "resumed_after_epoch": done})
    monitor = config.monitor if loop.classify else "val_loss"
    sign = -1.0 if monitor == "val_loss" else 1.0
    criterion_eval = nn.NLLLoss()

    def elapsed() -> float:
        return progress.elapsed_before + time.monotonic() - t0

    def emit(event: str, **kw) -> None:
        if callback is not None:
            ev = {"event": event, "epoch": None, "step": None, "steps": loop.steps, "train_loss": None,
                  "val_loss": None, "val_acc": None, "val_f1": None, "val_recall": None,
                  "lr": loop.opt.param_groups[0]["lr"],
                  "elapsed_s": elapsed()}
            ev.update(kw)
            callback(ev)

    if done:
        result.resumed_after_epoch = done
        emit("resumed", epoch=done)
    finished = result.stopped_early or done >= config.epochs
    for epoch in range(done + 1, config.epochs + 1):
        if finished:
            break
        loss_sum, seen = _run_epoch(loop, config, epoch, progress, shard, cancel, emit)
        if result.cancelled:
            break
        if shard is not None:  # the epoch's loss over every rank's rows
            loss_sum, seen = shard.reduce([loss_sum, float(seen)])
        val = _validate(model, loop.val_set, config, spec, criterion_eval)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), **val,
               "lr": loop.opt.param_groups[0]["lr"], "elapsed_s": elapsed()}
        result.history.append(row)
        result.epochs_run = epoch
        score = sign * row[monitor]
        if score > progress.best_score:
            progress.best_score, progress.best_state, progress.bad_epochs = score, copy.deepcopy(model.state_dict()), 0
            result.best_epoch, result.best = epoch, dict(row)
        else:
            progress.bad_epochs += 1
        result.stopped_early = bool(config.patience and progress.bad_epochs >= config.patience)
        if run_dir is not None:
            _write_json(run_dir / "curves.json", result.history)
        if resume_path is not None:
            _save_resume(resume_path, key, epoch, loop, progress, elapsed())
        emit("epoch", **{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_acc", "val_f1", "val_recall")},
             step=loop.steps)
        finished = result.stopped_early
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    result.elapsed_s = elapsed()
    if run_dir is not None:
        _write_json(run_dir / "metrics.json", {"status": "cancelled" if result.cancelled else "done",
                                               **result.to_dict()})
    best = result.best
    emit("cancelled" if result.cancelled else "done", epoch=result.best_epoch,
         **{k: best.get(k) for k in ("train_loss", "val_loss", "val_acc", "val_f1", "val_recall")})
    return result


def finetune(checkpoint_path, train_data: TensorSet, val_data: TensorSet, config: TrainConfig,
             classes=None, callback=None, cancel=None, run_dir=None,
             raw_landmarks=None, resume: bool = False) -> tuple[FerModel, dict, TrainResult]:
    """Fine-tune a checkpoint: a new head when `classes` differ from the card's (keeping the trained rows of
    the classes both lists share, `FerModel.remap_head`), the backbone frozen
    when config.freeze_backbone; raw_landmarks and resume as in `train` (config.pose_augment of
    landmark models). Returns (model, updated card, result); save with save_checkpoint."""
    config = config.resolved()  # the card names the device used
    model, card = load_checkpoint(checkpoint_path)
    classes = list(classes) if classes is not None else list(card["classes"])
    if classes != card["classes"]:
        model.remap_head(card["classes"], classes)
    if train_data.spec is None:
        train_data.spec = card_spec(card)
    result = train(model, train_data, val_data, config, callback=callback, cancel=cancel, run_dir=run_dir,
                   raw_landmarks=raw_landmarks, resume=resume)
    card = {**base_of(card), "classes": classes,
            "training": {"config": config.to_dict(), "finetuned_from": {
                "model": card["model"], "classes": card["classes"], "weights_sha256": card["weights_sha256"],
                "training": card.get("training", {})}},
            "metrics": {"val": result.best}}
    return model, card, result


__all__ = ["Shard", "SoftTargetLoss", "TrainConfig", "TrainResult", "class_weights", "distill_loss", "finetune", "teacher_probabilities",
           "train"]
