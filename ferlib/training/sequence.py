"""Short-sequence model: a small temporal classifier over per-frame embeddings of one recording.

The second source design's plan: instead of smoothing a per-frame model's probabilities (EMA, the
window vote of ferlib.inference.pipeline.Smoother), learn from a person's recording how their expressions
unfold over the last T frames.

- `video_embeddings(video)` runs the real front end on a video (the Pipeline's extractor in video
  mode, its model crop and input batch, its model's probabilities) and returns, for every frame, the
  embedding of the main face: the input of the base model's final linear layer (`head_inputs`, the
  embedding ferlib.training.personal adapts), averaged with the mirrored face's when the model is run with flip
  TTA, as the Pipeline runs it.
- `SequenceClassifier`: (N, T, D) embeddings -> (N, C) logits of the *last* frame of each window:
  LayerNorm, a linear projection to `hidden` channels, two residual 1-D convolutions over time, then
  the mean over the window beside the last frame's features into a linear layer (about 11k
  parameters for the default model's D=128 with hidden=32 and 7 classes).
- `train_sequence_model(sequences, classes)`: trains it on every window of T consecutive frames that
  lies inside one sequence (a chunk of a recording: consecutive frames with their labels), label =
  the window's last frame, with a fixed schedule (no validation split: a recording's few chunks are
  too few to stop on), class-balanced loss and Gaussian noise on the embeddings.
- `predict_causal(model, embeddings)`: each frame's probabilities from that frame and the T-1 before
  it (the first frames of a stream repeat the first frame), as a live stream would give them.

Labels index `classes` (normally the base model's); classes without training frames get pushed
down and are in effect never predicted: the model knows only the emotions the person recorded.
Measured against EMA and the window vote by scripts/sequence_protocol.py (docs/sequence.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ferlib.errors import InputError
from ferlib.inference.checkpoint import read_checkpoint
from ferlib.inference.pipeline import Pipeline
from ferlib.inputs import Mirror
from ferlib.io import iter_video
from ferlib.training.personal import head_inputs

DEFAULT_BASE = "resnet18_attention_fer2013_long"


@dataclass
class SequenceConfig:
    """A sequence model's shape and fixed training schedule.

    window: frames per window (T). hidden, kernel, dropout: the model. noise: standard deviation of
    the Gaussian noise added to the (LayerNorm-ed) embeddings while training. epochs, batch_size, lr,
    weight_decay: AdamW over all training windows. threads: torch threads while training.
    """

    window: int = 8
    hidden: int = 32
    kernel: int = 3
    dropout: float = 0.2
    noise: float = 0.3
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    threads: int = 1

    def __post_init__(self):
        if self.window < 1 or self.hidden < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise InputError(f"bad SequenceConfig {asdict(self)}: window, hidden >= 1 and an odd kernel")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise InputError(f"bad SequenceConfig {asdict(self)}: epochs, batch_size >= 1, lr > 0, weight_decay >= 0")
        if not 0 <= self.dropout < 1 or self.noise < 0:
            raise InputError(f"bad SequenceConfig {asdict(self)}: 0 <= dropout < 1, noise >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


class SequenceClassifier(nn.Module):
    """(N, T, D) embeddings of T consecutive frames -> (N, C) logits of the last frame."""

    def __init__(self, dim: int, num_classes: int, window: int = 8, hidden: int = 32, kernel: int = 3,
                 dropout: float = 0.2):
        super().__init__()
        self.hparams = dict(dim=dim, num_classes=num_classes, window=window, hidden=hidden, kernel=kernel,
                            dropout=dropout)
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(2))
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.window or x.shape[2] != self.hparams["dim"]:
            raise InputError(f"sequence model: expected (N, {self.window}, {self.hparams['dim']}) embeddings, "
                             f"got {tuple(x.shape)}")
        x = self.norm(x)
        if noise > 0:
            x = x + noise * torch.randn_like(x)
        h = torch.relu(self.proj(self.drop(x))).transpose(1, 2)  # (N, H, T)
        for conv in self.convs:
            h = h + torch.relu(conv(h))
        return self.head(self.drop(torch.cat([h.mean(2), h[:, :, -1]], 1)))


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _as_embeddings(e, name: str, dim: int | None = None) -> torch.Tensor:
    e = torch.as_tensor(np.asarray(e, dtype=np.float32))
    if e.dim() != 2 or len(e) == 0:
        raise InputError(f"{name}: expected (frames, dim) embeddings, got shape {tuple(e.shape)}")
    if dim is not None and e.shape[1] != dim:
        raise InputError(f"{name}: embeddings of dimension {e.shape[1]}, the model takes {dim}")
    if not torch.isfinite(e).all():
        raise InputError(f"{name}: embeddings contain NaN or infinite values")
    return e


def windows(e: torch.Tensor, window: int, pad: bool = False) -> torch.Tensor:
    """(F, D) -> (W, window, D): every run of `window` consecutive frames, ending at frames
    window-1..F-1 (W = F - window + 1), or with `pad` ending at every frame (W = F, the start padded
    by repeating the first frame)."""
    if pad:
        e = torch.cat([e[:1].expand(window - 1, -1), e])
    return e.unfold(0, window, 1).transpose(1, 2)


def training_windows(sequences, classes, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All windows inside the sequences and their labels (the last frame's); InputError when there
    are none or when they hold fewer than two classes."""
    if not sequences:
        raise InputError("a sequence model needs at least one sequence of labelled frames; got none")
    xs, ys, lengths, dim = [], [], [], None
    for i, (e, y) in enumerate(sequences):
        e = _as_embeddings(e, f"sequence {i}", dim)
        dim = e.shape[1]
        y = torch.as_tensor(np.asarray(y)).long()
        if y.shape != (len(e),):
            raise InputError(f"sequence {i}: {len(e)} frames but labels of shape {tuple(y.shape)}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise InputError(f"sequence {i}: labels must index the {len(classes)} classes, got {y.min()}..{y.max()}")
        lengths.append(len(e))
        if len(e) >= window:
            xs.append(windows(e, window))
            ys.append(y[window - 1:])
    if not xs:
        raise InputError(f"too few frames: a sequence model with a window of {window} frames needs a sequence of at "
                         f"least {window} consecutive frames; the longest has {max(lengths)}")
    x, y = torch.cat(xs), torch.cat(ys)
    counts = torch.bincount(y, minlength=len(classes))
    present = {classes[c]: int(n) for c, n in enumerate(counts.tolist()) if n}
    if len(present) < 2:
        raise InputError("a sequence model needs frames of at least two emotions; got only "
                         + ", ".join(f"{c} ({n} windows)" for c, n in present.items()) + ": record another emotion")
    return x, y


def train_sequence_model(sequences, classes, config: SequenceConfig | None = None) -> tuple[SequenceClassifier, dict]:
    """Train a SequenceClassifier on `sequences`: an iterable of (embeddings (L, D), labels (L,))
    pairs, each one run of consecutive frames of a recording, labels indexing `classes`. Returns the
    model (eval mode) and a report (windows per class, parameters, seconds, final loss)."""
    config = config or SequenceConfig()
    classes = list(classes)
    x, y = training_windows(list(sequences), classes, config.window)
    t0 = time.monotonic()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    try:
        g = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        model = SequenceClassifier(x.shape[2], len(classes), config.window, config.hidden, config.kernel,
                                   config.dropout)
        counts = torch.bincount(y, minlength=len(classes)).float()
        weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()),
                             torch.zeros_like(counts))
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
        model.train()
        loss = torch.tensor(0.0)
        for _ in range(config.epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), config.batch_size):
                idx = perm[i:i + config.batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx], noise=config.noise), y[idx], weight=weight)
                loss.backward()
                opt.step()
            sched.step()
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    report = {"config": config.to_dict(), "windows": len(x), "parameters": n_parameters(model),
              "per_class": {classes[c]: int(n) for c, n in enumerate(counts.long().tolist()) if n},
              "final_loss": round(float(loss.detach()), 4), "seconds": round(time.monotonic() - t0, 3)}
    return model, report


@torch.no_grad()
def predict_causal(model: SequenceClassifier, frame_embeddings) -> np.ndarray:
    """(F, C) probabilities: frame i's from the embeddings of frames i-T+1..i (a stream's first
    frames repeat frame 0). Give the frames in which the face was found, in order."""
    e = _as_embeddings(frame_embeddings, "predict_causal", int(model.hparams["dim"]))
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(model(windows(e, model.window, pad=True)), 1)
    finally:
        model.train(was_training)
    return probs.numpy()


@dataclass
class VideoEmbeddings:
    """The front end's output for every decoded (kept) frame of a video.

    frame: frame index; t_s: timestamp, s; detected: a face was found; embeddings: (F, D) the main
    face's embedding (NaN rows where none); probs: (F, C) the Pipeline's probabilities of that face
    (no smoothing; NaN where none); classes: the base model's classes; fps: frames per second of the
    decoded video; inputs: the model input batch of the frames with a face (rows in frame order:
    `inputs[k][i]` belongs to the i-th True of `detected`), spec: its ferlib.inputs.InputSpec.
    """

    frame: np.ndarray
    t_s: np.ndarray
    detected: np.ndarray
    embeddings: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    fps: float
    inputs: dict[str, torch.Tensor]
    spec: object


def video_embeddings(video, checkpoint=DEFAULT_BASE, step: int = 1, max_frames: int | None = None,
                     threads: int = 1) -> VideoEmbeddings:
    """Run the real front end on every `step`-th frame of `video`: the Pipeline (default settings,
    extractor in video mode) finds the faces; the main face (lowest face id, as
    scripts/eval_smoothing.py takes it) is prepared by the Pipeline (`inputs_for`: model crop, input
    batch) and classified by it (`probabilities`: its runner, flip TTA as the card says); the same
    batch gives the embedding through the checkpoint's PyTorch model."""
    if step < 1:
        raise InputError(f"step must be >= 1, got {step}")
    path, model, card = read_checkpoint(checkpoint)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    frames, times, found, batches = [], [], [], []
    try:
        with Pipeline(path, smoothing="none", mode="video", threads=threads) as pipe:
            for idx, ts, bgr in iter_video(video, max_frames=max_frames):
                if idx % step:
                    continue
                faces = pipe.extractor.process(bgr, ts)
                frames.append(idx)
                times.append(ts / 1000.0)
                found.append(bool(faces))
                if faces:
                    face = min(faces, key=lambda f: f.face_id)
                    batches.append(pipe.inputs_for(bgr, [face]))
            if not batches:
                raise InputError(f"video {video}: no face found in any frame")
            batch = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
            probs = pipe.probabilities(batch)
            flip = pipe._mirror is not None  # the Pipeline's own TTA rule (from the card)
            classes = pipe.classes
        emb = head_inputs(model, batch)
        if flip:
            emb = (emb + head_inputs(model, Mirror(pipe.spec)(batch))) / 2
    finally:
        torch.set_num_threads(old_threads)
    found_a = np.array(found)
    e_all = np.full((len(frames), emb.shape[1]), np.nan, np.float32)
    p_all = np.full((len(frames), len(classes)), np.nan, np.float32)
    e_all[found_a], p_all[found_a] = emb.numpy(), probs
    t = np.array(times)
    fps = float((len(t) - 1) * step / (t[-1] - t[0])) if len(t) > 1 and t[-1] > t[0] else float("nan")
    return VideoEmbeddings(np.array(frames), t, found_a, e_all, p_all, tuple(classes), fps, batch, pipe.spec)


__all__ = ["DEFAULT_BASE", "SequenceClassifier", "SequenceConfig", "VideoEmbeddings", "head_inputs", "n_parameters",
           "predict_causal", "train_sequence_model", "training_windows", "video_embeddings", "windows"]
