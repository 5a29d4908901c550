"""Hybrid image + landmark models: `hybrid_heatmap` (fourth source design), `hybrid_fusion` (fifth)."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import default_num_points, eval_blur_of, mlp, vgg_trunk
from .registry import FerModel, register_model


@register_model("hybrid_heatmap")
class HybridHeatmap(FerModel):
    """Two CNN branches, grey face image (N,1,S,S) and Gaussian landmark heatmaps (N,H,S',S')
    (H=1 summed or one per point, see ferlib.inputs.render_heatmaps), plus optionally a third on
    eye/brow/mouth patches (N,3,P,P); features concatenated into two dense layers (hidden + head)."""

    input_kind = "hybrid"

    def __init__(self, num_classes: int = 7, heatmap_channels: int = 1, patches: bool = False,
                 width: int = 32, hidden: int = 256, dropout: float = 0.4, eval_blur: float = 0.0):
        super().__init__()
        self.hparams = dict(num_classes=num_classes, heatmap_channels=heatmap_channels, patches=patches,
                            width=width, hidden=hidden, dropout=dropout)
        self.blur = eval_blur_of(self.hparams, eval_blur)
        self.input_keys = ("image", "heatmaps") + (("patches",) if patches else ())
        self.image_branch, n_img = vgg_trunk(1, width, 3)
        self.heatmap_branch, n_hm = vgg_trunk(heatmap_channels, width // 2, 3)
        n = n_img + n_hm
        if patches:
            self.patch_branch, n_p = vgg_trunk(3, width // 2, 2, pooled=2)
            n += n_p
        self.fuse = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        parts = [self.image_branch(self.blur(batch["image"])), self.heatmap_branch(batch["heatmaps"])]
        if self.hparams["patches"]:
            parts.append(self.patch_branch(batch["patches"]))
        return self.head(self.fuse(torch.cat(parts, dim=1)))


@register_model("hybrid_fusion")
class HybridFusion(FerModel):
    """Image CNN on (N,1,S,S) + MLP on flattened landmarks (N,3,K), concatenated, one dense layer,
    head. num_points=0 takes K from ferlib.faces.normalize.SUBSETS[subset]."""

    input_kind = "hybrid"
    input_keys = ("image", "landmarks")

    def __init__(self, num_classes: int = 7, num_points: int = 0, subset: str = "default", width: int = 32,
                 landmark_hidden: int = 256, hidden: int = 256, dropout: float = 0.4, eval_blur: float = 0.0):
        super().__init__()
        num_points = num_points or default_num_points(subset)
        self.hparams = dict(num_classes=num_classes, num_points=num_points, subset=subset, width=width,
                            landmark_hidden=landmark_hidden, hidden=hidden, dropout=dropout)
        self.blur = eval_blur_of(self.hparams, eval_blur)
        self.image_branch, n_img = vgg_trunk(1, width, 3)
        self.landmark_branch = nn.Sequential(nn.Flatten(), mlp([3 * num_points, landmark_hidden, landmark_hidden], 0.2))
        self.fuse = nn.Sequential(nn.Linear(n_img + landmark_hidden, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        parts = [self.image_branch(self.blur(batch["image"])), self.landmark_branch(batch["landmarks"])]
        return self.head(self.fuse(torch.cat(parts, dim=1)))
