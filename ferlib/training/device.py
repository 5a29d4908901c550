"""Compute devices of training and evaluation: resolving "auto", moving batches, bf16 autocast on CUDA.

Everything here is a no-op on the CPU (same tensors, no context), so CPU training stays exactly as
it was; on CUDA, forward passes run under bf16 autocast and host->device copies are non-blocking.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ferlib.errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """The device a TrainConfig.device names: "cpu" or "cuda"; "auto" = cuda when torch sees a
    CUDA GPU, else cpu. "cuda" without a usable GPU (or a CPU-only torch) raises InputError."""
    if device not in DEVICES:
        raise InputError(f"device {device!r} is not one of {DEVICES}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA GPU "
                         "(CPU-only build, no driver or no GPU); use --device cpu or auto")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """A batch dict with every tensor on `device` (non-blocking copies; the same tensors when they
    are there already)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device) -> contextlib.AbstractContextManager:
    """The context for forward passes on `device`: bf16 autocast on CUDA, nothing on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["DEVICES", "autocast", "model_device", "resolve_device", "to_device"]
