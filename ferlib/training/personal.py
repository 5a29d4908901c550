"""Personal adaptation: teach a trained model one person's face from a few labelled samples.

Every method keeps the base model's architecture and input spec, so a personal model is an ordinary
checkpoint (Pipeline, `ferlib predict`, export and the app load it like any other):

- "prototype": the base model is kept as it is and its last layer gains the person's class
  prototypes. The embedding e (the input of the model's final linear layer) of every sample and of
  augmented copies gives a mean mu_c per emotion; the new logits are the base logits plus
  `strength * (-|e - mu_c|^2) / s` (s: the mean squared distance of the samples to their own
  prototype). |e|^2 is the same for every class, so this is again one linear layer:
  w_c += 2 * strength * mu_c / s, b_c += -strength * |mu_c|^2 / s. Emotions the person did not
  record get the mean of the recorded ones' terms, so they are neither favoured nor ruled out.
- "head": the final linear layer is refitted on the embeddings of the samples and their augmented
  copies (full-batch Adam, a fixed number of steps), starting from the base layer and pulled back
  to it by an L2 penalty (`l2sp`), so emotions with no samples and faces unlike the person's keep
  the generic behaviour.
- "full": every weight is fine-tuned (ferlib.training.train) for a fixed number of epochs with augmentation
  and no early stopping (a validation split of a few images is noise); slow for image models on a CPU.

`adapt` uses every sample it is given: a fixed schedule needs no validation split. The methods
were compared on the cross-session protocol in scripts/personal_protocol.py (docs/results.md, "Personal
models"); DEFAULT_METHOD is the one that won there.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from ferlib.errors import InputError
from ferlib.inference.checkpoint import base_of, card_spec, card_tta_flip, read_checkpoint
from ferlib.inputs import Augmenter, Mirror, TensorSet
from ferlib.models.registry import FerModel
from ferlib.training.train import TrainConfig, train

METHODS = ("prototype", "head", "full")
DEFAULT_METHOD = "head"
# The Studio's guide: samples per emotion and view for a personal model. The cross-session protocol
# adapted on 1 per view (frontal, turned either way: 3 per emotion); the Studio's chunked split holds
# 15 % of each emotion's samples out for its test, so 2 per view leave at least 1 to learn from.
VIEWS = {"yaw < -10°": (-np.inf, -10.0), "frontal": (-10.0, 10.0), "yaw > 10°": (10.0, np.inf)}
SAMPLES_PER_VIEW = 2


@dataclass
class AdaptConfig:
    """Settings of a personal adaptation; saved in the personal model's card.

    copies: augmented copies of each sample whose embeddings join the originals' and their mirrors'
    ("prototype", "head"); at most `max_embeddings` are computed: mirrors only while 2 x the samples
    fit, copies lowered to fit. strength: weight of the
    prototypes against the base logits. l2sp: the head's pull back to the base layer. steps, lr: the
    head's optimisation. epochs, full_lr: the "full" method's fixed schedule. threads: torch threads.
    """

    method: str = DEFAULT_METHOD
    copies: int = 8
    max_embeddings: int = 4096
    strength: float = 1.0
    l2sp: float = 0.01
    steps: int = 300
    lr: float = 0.01
    epochs: int = 15
    full_lr: float = 1e-4
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"adaptation method must be one of {METHODS}, got {self.method!r}")
        if self.copies < 0 or self.max_embeddings < 1 or self.steps < 1 or self.epochs < 1:
            raise InputError(f"bad AdaptConfig {asdict(self)}: copies >= 0, max_embeddings, steps, epochs >= 1")
        if self.strength < 0 or self.l2sp < 0 or self.lr <= 0 or self.full_lr <= 0:
            raise InputError(f"bad AdaptConfig {asdict(self)}: strength, l2sp >= 0 and lr, full_lr > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def samples_needed(samples: pd.DataFrame, classes, per_view: int = SAMPLES_PER_VIEW) -> pd.DataFrame:
    """The Studio's guide for a personal model: one row per emotion in `classes`, the samples it has
    per view (VIEWS, from the `yaw` column; samples without a head pose count for no view) and
    `needed`, how many more make `per_view` in every view. `samples`: Store.samples()' columns
    emotion and yaw."""
    yaw = pd.to_numeric(samples["yaw"], errors="coerce").to_numpy(float) if len(samples) else np.zeros(0)
    emotion = samples["emotion"].astype(str).to_numpy() if len(samples) else np.zeros(0, str)
    rows = []
    for c in classes:
        row = {"emotion": c}
        for view, (lo, hi) in VIEWS.items():
            row[view] = int(((emotion == c) & (yaw >= lo) & (yaw < hi)).sum())
        row["needed"] = int(sum(max(0, per_view - row[v]) for v in VIEWS))
        rows.append(row)
    return pd.DataFrame(rows, columns=["emotion", *VIEWS, "needed"])


def check_samples(labels, classes) -> dict[str, int]:
    """Samples per class; InputError unless there are >= 2 samples of >= 2 classes (a personal model
    learns how this person's emotions differ from each other: one emotion alone teaches nothing)."""
    labels = torch.as_tensor(labels).long()
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    per_class = {c: int(n) for c, n in zip(classes, counts) if n}
    if len(labels) < 2:
        raise InputError(f"a personal model needs samples of at least two emotions; got {len(labels)} sample(s)")
    if len(per_class) < 2:
        raise InputError(f"a personal model needs samples of at least two emotions; got only "
                         f"{', '.join(f'{c} ({n})' for c, n in per_class.items())}: record another emotion")
    return per_class


def linear_head(model: FerModel) -> nn.Linear:
    if not isinstance(model.head, nn.Linear):
        raise InputError(f"model {model.registry_name}: personal adaptation needs a linear final layer")
    return model.head


@torch.no_grad()
def head_inputs(model: FerModel, batch: dict[str, torch.Tensor], batch_size: int = 256) -> torch.Tensor:
    """(N, D): the embedding of a built batch — the input of the model's final linear layer — in eval
    mode. The one definition ferlib.training.personal and ferlib.training.sequence share."""
    head = linear_head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    n = len(next(iter(batch.values())))
    try:
        for i in range(0, n, batch_size):
            model({k: v[i:i + batch_size] for k, v in batch.items()})
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured)


@torch.no_grad()
def embeddings(model: FerModel, data: TensorSet, copies: int = 0, seed: int = 0, mirror: bool = True,
               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(E (M, D), labels (M,)): `head_inputs` of every sample, its mirror image (`mirror`: predictions
    average a face with its mirror where the card says so) and `copies` augmented copies of it
    (ferlib.inputs.Augmenter, seeded)."""
    g = torch.Generator().manual_seed(seed)
    views = [lambda b: b]
    if mirror and data.spec is not None:
        views.append(Mirror(data.spec))
    if copies and data.spec is not None:
        aug = Augmenter(data.spec)
        views += [lambda b: aug(b, g)] * copies
    emb, labels = [], []
    for view in views:
        for i in range(0, len(data), batch_size):
            idx = torch.arange(i, min(i + batch_size, len(data)))
            emb.append(head_inputs(model, view(data.batch(idx)), batch_size))
            labels.append(data.labels[idx])
    return torch.cat(emb), torch.cat(labels).long()


def _budget(config: AdaptConfig, n: int) -> tuple[bool, int]:
    """(mirrors, augmented copies per sample) within max_embeddings: the originals always, their
    mirrors while 2n fit, then copies."""
    mirror = 2 * n <= config.max_embeddings
    return mirror, max(0, min(config.copies, config.max_embeddings // max(n, 1) - (2 if mirror else 1)))


def _prototype_head(head: nn.Linear, emb: torch.Tensor, labels: torch.Tensor, strength: float) -> None:
    present = torch.unique(labels)
    mu = torch.stack([emb[labels == c].mean(0) for c in present])  # (P, D)
    own = mu[torch.searchsorted(present, labels)]
    scale = ((emb - own) ** 2).sum(1).mean().clamp(min=1e-6)
    w = 2 * strength * mu / scale  # (P, D)
    b = -strength * (mu ** 2).sum(1) / scale
    dw = w.mean(0, keepdim=True).repeat(head.out_features, 1)
    db = b.mean().repeat(head.out_features)
    dw[present], db[present] = w, b
    head.weight.add_(dw.to(head.weight.dtype))  # in place: the head's parameters stay the same tensors
    head.bias.add_(db.to(head.bias.dtype))


def _refit_head(head: nn.Linear, emb: torch.Tensor, labels: torch.Tensor, config: AdaptConfig) -> dict:
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    opt = torch.optim.Adam([w, b], lr=config.lr)
    # inverse-frequency weights: a person's few samples are rarely balanced over the emotions
    counts = torch.bincount(labels, minlength=head.out_features).float()
    cw = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), torch.zeros_like(counts))
    loss = torch.tensor(0.0)
    for _ in range(config.steps):
        opt.zero_grad()
        ce = nn.functional.cross_entropy(emb @ w.T + b, labels, weight=cw)
        loss = ce + config.l2sp * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
        loss.backward()
        opt.step()
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    return {"final_loss": float(loss.detach())}


def _full(model: FerModel, data: TensorSet, config: AdaptConfig, callback, cancel) -> dict:
    tc = TrainConfig(epochs=config.epochs, batch_size=max(2, min(32, len(data))), lr=config.full_lr,
                     patience=0, monitor="val_loss", augment=True, seed=config.seed,
                     num_threads=config.threads, device="cpu")
    result = train(model, data, data, tc, callback=callback, cancel=cancel)
    if result.cancelled:
        raise InputError("personal adaptation cancelled")
    return {"epochs_run": result.epochs_run, "train_config": tc.to_dict()}


def adapt_model(model: FerModel, data: TensorSet, classes, config: AdaptConfig | None = None,
                callback=None, cancel=None) -> dict:
    """Adapt `model` (in place) to the samples in `data` (labels index `classes`, the model's).
    Returns a report: method, samples per class, embeddings used, seconds."""
    config = config or AdaptConfig()
    classes = list(classes)
    if model.num_classes != len(classes):
        raise InputError(f"the model has {model.num_classes} classes, the samples are labelled with {len(classes)}")
    per_class = check_samples(data.labels, classes)
    if data.spec is None:
        raise InputError("adapt: the samples' TensorSet has no input spec")
    t0 = time.monotonic()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    report = {"method": config.method, "samples": len(data), "per_class": per_class,
              "classes_without_samples": [c for c in classes if c not in per_class]}
    try:
        if config.method == "full":
            report.update(_full(model, data, config, callback, cancel))
        else:
            mirror, copies = _budget(config, len(data))
            emb, labels = embeddings(model, data, copies=copies, seed=config.seed, mirror=mirror)
            report.update(mirrors=mirror, copies=copies, embeddings=len(emb))
            head = linear_head(model)
            with torch.no_grad():
                if config.method == "prototype":
                    _prototype_head(head, emb, labels, config.strength)
            if config.method == "head":
                report.update(_refit_head(head, emb, labels, config))
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    report["seconds"] = round(time.monotonic() - t0, 3)
    return report


def personal_card(base_card: dict, config: AdaptConfig, report: dict) -> dict:
    """The personal model's card: the base card with what it was adapted from and how."""
    tta = card_tta_flip(base_card)
    return {**base_of(base_card),
            "training": {"config": {"tta_flip": tta},  # the Pipeline flips as the base was measured
                         "personal": {"config": config.to_dict(), "report": report},
                         "finetuned_from": {"model": base_card["model"], "classes": base_card["classes"],
                                            "weights_sha256": base_card["weights_sha256"],
                                            "training": base_card.get("training", {})}},
            "metrics": {}}


def adapt(checkpoint, data: TensorSet, config: AdaptConfig | None = None, callback=None,
          cancel=None) -> tuple[FerModel, dict, dict]:
    """Load `checkpoint` (path or shipped name), adapt it to `data` (labels index the checkpoint's
    classes) and return (model, card, report); save with ferlib.inference.checkpoint.save_checkpoint."""
    config = config or AdaptConfig()
    _, model, card = read_checkpoint(checkpoint)
    if data.spec is None:
        data = replace(data, spec=card_spec(card))
    report = adapt_model(model, data, card["classes"], config, callback=callback, cancel=cancel)
    return model, personal_card(card, config, report), report


__all__ = ["AdaptConfig", "DEFAULT_METHOD", "METHODS", "SAMPLES_PER_VIEW", "VIEWS", "adapt", "adapt_model",
           "check_samples", "embeddings", "head_inputs", "personal_card", "samples_needed"]
