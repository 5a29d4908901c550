"""`distance_mlp`: MLP on pairwise landmark distances (second source design), optional clarity routing."""
from __future__ import annotations

import torch
from torch import nn

from ferlib.faces.features import num_distances

from .blocks import mlp
from .registry import FerModel, register_model


@register_model("distance_mlp")
class DistanceMLP(FerModel):
    """MLP on (N, D) pairwise distances (ferlib.faces.features). With n_strata > 1 each image-clarity
    stratum (batch key "stratum", (N,) int64 in [0, n_strata), see ferlib.inputs.clarity_stratum)
    has its own MLP trunk; the linear head is shared. num_features=0 takes D from the default
    index set of ferlib.faces.features (DISTANCE_POINTS)."""

    input_kind = "distances"

    def __init__(self, num_classes: int = 7, num_features: int = 0, hidden: tuple[int, ...] = (256, 128),
                 n_strata: int = 1, dropout: float = 0.3):
        super().__init__()
        if not num_features:
            num_features = num_distances()
        hidden_sizes = [int(h) for h in hidden]
        self.hparams = dict(num_classes=num_classes, num_features=num_features, hidden=hidden_sizes,
                            n_strata=n_strata, dropout=dropout)
        self.input_keys = ("distances",) + (("stratum",) if n_strata > 1 else ())
        self.trunks = nn.ModuleList(mlp([num_features, *hidden_sizes], dropout) for _ in range(n_strata))
        self.head = nn.Linear(hidden_sizes[-1], num_classes)

    @property
    def export_refused(self) -> str | None:
        if len(self.trunks) > 1:
            return ("per-stratum trunks route samples with boolean masks (data-dependent shapes); tracing "
                    "would freeze the example's routing")
        return None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.check_batch(batch)
        x = batch["distances"]
        if len(self.trunks) == 1:
            return self.head(self.trunks[0](x))
        stratum = batch["stratum"].long()
        out = x.new_zeros(x.shape[0], self.hparams["hidden"][-1])
        for s, trunk in enumerate(self.trunks):
            m = stratum == s
            if m.any():
                # BatchNorm needs >1 sample in training; a lone sample uses running statistics.
                if trunk.training and int(m.sum()) == 1:
                    trunk.eval()
                    out[m] = trunk(x[m]).to(out.dtype)  # bf16 under autocast (CUDA training)
                    trunk.train()
                else:
                    out[m] = trunk(x[m]).to(out.dtype)
        return self.head(out)
