"""Small building blocks shared by the model families."""
from __future__ import annotations

from torch import nn

from ferlib.faces.normalize import SUBSETS


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
