"""`resnet18_attention`: ResNet18 for 48x48 grey faces with squeeze-and-excitation after the last stage."""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .blocks import eval_blur_of
from .registry import FerModel, create_model, register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pool -> bottleneck MLP -> sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, max(channels // reduction, 4)), nn.ReLU(inplace=True),
                                nn.Linear(max(channels // reduction, 4), channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


@register_model("resnet18_attention")
class ResNet18Attention(FerModel):
    """BasicBlocks [2, 2, 2, 2] with widths width*(1, 2, 4, 8), 3x3 stem and no max-pool (48x48
    input keeps 48/24/12/6 resolution), SE attention on the last stage, global pool, dropout, head.
    width=64 is the standard ResNet18 (11.2M params); smaller widths for CPU training."""

    input_kind = "image"
    input_keys = ("image",)

    def __init__(self, num_classes: int = 7, width: int = 64, se_reduction: int = 16, dropout: float = 0.3,
                 eval_blur: float = 0.0):
        super().__init__()
        self.hparams = dict(num_classes=num_classes, width=width, se_reduction=se_reduction, dropout=dropout)
        self.blur = eval_blur_of(self.hparams, eval_blur)
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        c = width
        for i, stride in enumerate((1, 2, 2, 2)):
            w = width * 2 ** i
            layers += [BasicBlock(c, w, stride), BasicBlock(w, w, 1)]
            c = w
        layers += [SqueezeExcitation(c, se_reduction), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        return self.head(self.features(self.blur(batch["image"])))


def widen(model: ResNet18Attention, factor: float = 2, noise: float = 0.0, seed: int = 0) -> ResNet18Attention:
    """A `factor`-times wider copy of `model` that computes the same function (Net2WiderNet, Chen et al.
    2016): every new channel copies an old one (new channel j copies old channel j mod C), and the
    weights that read a copied channel are divided by its number of copies, so every activation, and
    the output, stays as it was in eval mode. `factor` >= 1 need not be whole (width 32 -> 48: 1.5) as long
    as the new width is. `noise` (a fraction of each weight tensor's standard
    deviation, seeded) breaks the copies' symmetry for the training that follows; 0 keeps the function
    exact. The copy starts a longer fine-tune with more capacity than the trained model it came from."""
    if not isinstance(model, ResNet18Attention):
        raise TypeError(f"widen takes a resnet18_attention model, got {type(model).__name__}")
    hp = dict(model.hparams)
    width = hp["width"] * factor if isinstance(factor, (int, float)) and not isinstance(factor, bool) else None
    if width is None or factor < 1 or width != int(width):
        raise ValueError(f"factor must be >= 1 and make a whole width (width {hp['width']}), got {factor!r}")
    wide = cast(ResNet18Attention, create_model("resnet18_attention", **{**hp, "width": int(width)}))
    gen = torch.Generator().manual_seed(seed)
    old_modules = dict(model.named_modules())
    with torch.no_grad():
        for name, new in wide.named_modules():
            old = old_modules[name]
            if isinstance(new, (nn.Conv2d, nn.Linear)):
                w_old, w_new = old.weight, new.weight
                out_map = torch.arange(w_new.shape[0]) % w_old.shape[0]
                in_map = torch.arange(w_new.shape[1]) % w_old.shape[1]
                copies = torch.bincount(in_map, minlength=w_old.shape[1]).to(w_old.dtype)
                w = w_old[out_map][:, in_map] / copies[in_map].view(1, -1, *([1] * (w_old.dim() - 2)))
                if noise > 0:
                    w = w + noise * w_old.std() * torch.randn(w.shape, generator=gen)
                new.weight.copy_(w)
                if new.bias is not None:
                    new.bias.copy_(old.bias[out_map])
            elif isinstance(new, nn.BatchNorm2d):
                out_map = torch.arange(new.num_features) % old.num_features
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new, key).copy_(getattr(old, key)[out_map])
                if new.num_batches_tracked is not None and old.num_batches_tracked is not None:
                    new.num_batches_tracked.copy_(old.num_batches_tracked)
    return wide.train(model.training)
