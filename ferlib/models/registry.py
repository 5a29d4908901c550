"""Model registry (timm style) and the base class every ferlib model derives from."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ferlib.errors import InputError

_REGISTRY: dict[str, Callable[..., "FerModel"]] = {}


class FerModel(nn.Module):
    """Base class: a forward over a dict batch, a `head` (final layer) and a backbone (the rest).

    Subclasses set `input_kind` ("landmarks" | "image" | "hybrid" | "distances"), `input_keys`
    (the batch keys forward reads) and `task` ("classification" or "keypoints"), and store their
    resolved constructor arguments in `self.hparams` (JSON-serialisable) so a checkpoint can
    rebuild them exactly.
    """

    input_kind: str = ""
    input_keys: tuple[str, ...] = ()
    task: str = "classification"
    head: nn.Module
    hparams: dict
    registry_name: str = ""

    @property
    def export_refused(self) -> str | None:
        """Why this model cannot be exported by tracing (None: it can). A model whose forward routes
        samples by their data says so here, so loading picks eager PyTorch without trying."""
        return None

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        missing = [k for k in self.input_keys if k not in batch]
        if missing:
            raise InputError(f"model {self.registry_name or type(self).__name__} needs batch keys "
                             f"{list(self.input_keys)}; missing {missing} (got {sorted(batch)})")

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside `head` (what `freeze_backbone` freezes)."""
        head_ids = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]

    def backbone_modules(self) -> list[nn.Module]:
        head_ids = {id(m) for m in self.head.modules()}
        return [m for m in self.modules() if id(m) not in head_ids and m is not self]

    @property
    def num_classes(self) -> int:
        return int(self.hparams["num_classes"])

    def replace_head(self, num_classes: int) -> None:
        """New, freshly initialised final layer with `num_classes` outputs (fine-tuning to new classes)."""
        if not isinstance(self.head, nn.Linear):
            raise InputError(f"model {self.registry_name} has no replaceable linear head")
        self.head = nn.Linear(self.head.in_features, num_classes)
        self.hparams["num_classes"] = int(num_classes)

    def remap_head(self, old_classes, new_classes) -> None:
        """A final layer for `new_classes` that keeps the trained row (weights and bias) of every class also
        in `old_classes`; rows of new classes start freshly initialised (e.g. contempt added to the seven)."""
        old, new = list(old_classes), list(new_classes)
        if not isinstance(self.head, nn.Linear) or self.head.out_features != len(old):
            raise InputError(f"model {self.registry_name} has no linear head over {len(old)} classes to remap")
        previous = self.head
        self.replace_head(len(new))
        with torch.no_grad():
            for i, c in enumerate(new):
                if c in old:
                    self.head.weight[i] = previous.weight[old.index(c)]
                    if self.head.bias is not None and previous.bias is not None:
                        self.head.bias[i] = previous.bias[old.index(c)]

    def config(self) -> dict:
        """Registry name + kwargs that rebuild this model with `create_model`."""
        return {"name": self.registry_name, "kwargs": dict(self.hparams)}


def register_model(name: str) -> Callable:
    """Class/factory decorator: make `create_model(name, ...)` build it."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 7, **kwargs) -> FerModel:
    """Build a registered model; unknown names or arguments raise InputError."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; registered models: {list_models()}") from None
    try:
        model = factory(num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise InputError(f"bad arguments for model {name!r}: {e}") from None
    model.registry_name = name
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
