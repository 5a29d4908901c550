"""`image_cnn`: the compact 2D-CNN baseline on grey face crops."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import eval_blur_of, vgg_trunk
from .registry import FerModel, register_model


@register_model("image_cnn")
class ImageCNN(FerModel):
    """Three VGG-style stages (conv-bn-relu x2, max-pool, dropout), adaptive pool to 3x3, one dense
    layer with dropout, linear head. width=32: ~0.59M params; any input size >= 24."""

    input_kind = "image"
    input_keys = ("image",)

    def __init__(self, num_classes: int = 7, width: int = 32, stages: int = 3, hidden: int = 256,
                 dropout: float = 0.4, conv_dropout: float = 0.1, eval_blur: float = 0.0):
        super().__init__()
        self.hparams = dict(num_classes=num_classes, width=width, stages=stages, hidden=hidden,
                            dropout=dropout, conv_dropout=conv_dropout)
        self.blur = eval_blur_of(self.hparams, eval_blur)
        trunk, n = vgg_trunk(1, width, stages, conv_dropout)
        self.features = nn.Sequential(trunk, nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        return self.head(self.features(self.blur(batch["image"])))
