"""`keypoint_regressor`: small CNN predicting key points (eye centres, lip corners) on low-res grey crops."""
from __future__ import annotations

import torch
from torch import nn

from ferlib.errors import InputError
from ferlib.faces.normalize import KEYPOINT_INDICES

from .blocks import vgg_trunk
from .registry import FerModel, register_model


@register_model("keypoint_regressor")
class KeypointRegressor(FerModel):
    """Predicts (N, P, 2) crop-relative coordinates in [0, 1] (x, y) of KEYPOINT_INDICES from an
    (N, 1, S, S) crop; trained with MSE on face mesh's own points (ferlib.inputs.keypoint_targets).
    `num_classes` is accepted for the registry's uniform signature and not used."""

    input_kind = "image"
    input_keys = ("image",)
    task = "keypoints"

    def __init__(self, num_classes: int = 7, num_keypoints: int = len(KEYPOINT_INDICES), width: int = 24,
                 hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.hparams = dict(num_keypoints=num_keypoints, width=width, hidden=hidden, dropout=dropout)
        trunk, n = vgg_trunk(1, width, 3, dropout=0.0)
        self.features = nn.Sequential(trunk, nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, 2 * num_keypoints)

    @property
    def num_classes(self) -> int:
        return 0

    def replace_head(self, num_classes: int) -> None:
        raise InputError("a keypoint regressor has no class head to replace")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        return self.head(self.features(batch["image"])).view(-1, self.hparams["num_keypoints"], 2)
