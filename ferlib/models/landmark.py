"""`landmark_cnn1d`: 1D CNN over a normalised landmark subset (the first source design)."""
from __future__ import annotations

import torch
from torch import nn

from .registry import FerModel, register_model


@register_model("landmark_cnn1d")
class LandmarkCNN1d(FerModel):
    """Conv1d over the landmark axis of (N, 3, K) points: 3 conv layers, pooled to a fixed length,
    one dense layer with dropout, linear head. Any K works (adaptive pooling); ~0.34M params."""

    input_kind = "landmarks"
    input_keys = ("landmarks",)

    def __init__(self, num_classes: int = 7, channels: int = 64, pooled: int = 8, hidden: int = 256,
                 dropout: float = 0.3):
        super().__init__()
        self.hparams = dict(num_classes=num_classes, channels=channels, pooled=pooled, hidden=hidden,
                            dropout=dropout)
        c = channels

        def block(a, b):
            return [nn.Conv1d(a, b, 3, padding=1, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, c), *block(c, 2 * c), nn.MaxPool1d(2), *block(2 * c, 2 * c),
            nn.AdaptiveAvgPool1d(pooled), nn.Flatten(),
            nn.Linear(2 * c * pooled, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        return self.head(self.features(batch["landmarks"]))
