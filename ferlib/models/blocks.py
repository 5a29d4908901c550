"""Small building blocks shared by the model families."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferlib.errors import InputError
from ferlib.faces.normalize import SUBSETS


class EvalBlur(nn.Module):
    """Gaussian blur of an image batch (N, C, H, W) in eval mode only: `sigma` px, separable,
    edges replicated; 0 = off (the identity, every model's default).

    Why: the training augmentation (`ferlib.inputs.Augmenter`) resamples every crop bilinearly at a
    random sub-pixel position, which smooths it (the mean bilinear kernel is [1/8, 3/4, 1/8] per axis, a
    variance of 1/4 px^2). A model trained so has never seen a crisp crop and reads one worse; sigma
    0.5 gives the crops it reads the same variance (docs/results.md measures it). In training mode
    the crops are already resampled, so nothing is done. The kernel is a buffer outside the state
    dict: the weights file does not change, the model's kwargs say the sigma."""

    kernel: torch.Tensor

    def __init__(self, sigma: float = 0.0):
        super().__init__()
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise InputError(f"eval_blur must be a finite sigma >= 0 (pixels), got {sigma!r}")
        self.sigma = float(sigma)
        r = math.ceil(3 * self.sigma) if self.sigma > 0 else 0
        x = torch.arange(-r, r + 1, dtype=torch.float32)
        w = torch.exp(-x ** 2 / (2 * self.sigma ** 2)) if self.sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", w / w.sum(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.sigma == 0:
            return x
        shape, r = x.shape, len(self.kernel) // 2
        k = self.kernel.to(x.dtype)
        y = x.reshape(-1, 1, shape[-2], shape[-1])  # every channel alike (a fixed kernel shape exports to ONNX)
        y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
        return y.reshape(shape)


def eval_blur_of(hparams: dict, sigma: float) -> EvalBlur:
    """The EvalBlur of an image model, its sigma recorded in `hparams` (the card's kwargs) when not 0."""
    if sigma:
        hparams["eval_blur"] = float(sigma)
    return EvalBlur(sigma)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def vgg_trunk(cin: int, width: int, stages: int = 3, dropout: float = 0.1,
              pooled: int = 3) -> tuple[nn.Sequential, int]:
    """[conv-bn-relu x2, maxpool, dropout] per stage, widths width*2^i, then adaptive pool to
    pooled x pooled and flatten. Returns (module, flattened feature count)."""
    layers: list[nn.Module] = []
    c = cin
    for i in range(stages):
        w = width * 2 ** i
        layers += [conv_bn(c, w), conv_bn(w, w), nn.MaxPool2d(2), nn.Dropout(dropout)]
        c = w
    layers += [nn.AdaptiveAvgPool2d(pooled), nn.Flatten()]
    return nn.Sequential(*layers), c * pooled * pooled


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear-BN-ReLU-Dropout for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def default_num_points(subset: str = "default") -> int:
    """Number of landmarks in a named subset of ferlib.faces.normalize.SUBSETS."""
    return len(SUBSETS[subset])
