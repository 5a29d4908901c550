"""One inference runtime below the pipeline: a model behind a small runner interface.

A runner has `backend` ("onnx" | "torchscript" | "torch"), `task` ("classification" | "keypoints"),
`input_keys` (the batch keys it reads, in order), `card` (the model card, or None), `classes` and
`threads`; calling it on a batch dict (torch tensors or numpy arrays) gives numpy float32:
class probabilities (N, C) for a classifier, the raw outputs (e.g. (N, P, 2) points) otherwise;
`outputs(batch)` gives the raw outputs (logits) of any runner.

`load_runner(checkpoint, backend="auto", threads=1)` is the one factory: a checkpoint path or
shipped name (safetensors + card), an exported `.onnx` / TorchScript (`.pt`) file, or a
`(model, card)` pair. "auto" is ONNX Runtime (the fast path on CPU: on this 2-core machine the
landmark model runs ~0.05 ms per face against ~2.5 ms per eager conv call) where the model exports,
else eager PyTorch. Eager PyTorch is for training; `predict`, `evaluate`, `Pipeline`, Live and
Studio use `load_runner`'s default.

Threads are set here, deliberately, not through the environment: ONNX Runtime gets `threads`
intra-op threads that sleep when idle (no spinning against MediaPipe's own threads); the torch
runners set torch's (process-wide) intra-op thread count to `threads` before each call; loading a
runner caps the BLAS libraries' threads (numpy's OpenBLAS, process-wide) at `threads` too. One thread
is the default because the pipeline's MediaPipe graphs run threads of their own on the same cores
(with two torch threads a frame took 1157 ms instead of 28 ms under load on this machine).

The loading path is straight: the checkpoint is read once (ferlib.inference.checkpoint), traced once
(ferlib.inference.export's `onnx_bytes` / `traced_torchscript`, unchecked: every model family's
export is checked against PyTorch in tests/test_export.py and by `ferlib export`), and its one
runner built (ferlib.inference.runners). A model that cannot be traced says why
(`FerModel.export_refused`): "auto" then runs it in eager PyTorch without trying. Exports of
checkpoints loaded from files are kept per weights hash for the process, so a second Pipeline of the
same model starts without exporting again.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ferlib.errors import FerError, InputError
from ferlib.inference import export
from ferlib.inference.checkpoint import read_checkpoint
from ferlib.inference.runners import (
    BACKENDS,
    CARD_KEY,
    DEFAULT_BACKEND,
    DEFAULT_THREADS,
    KEYS_KEY,
    ONNX_SUFFIXES,
    TORCHSCRIPT_SUFFIXES,
    OnnxRunner,
    Runner,
    TorchRunner,
    TorchScriptRunner,
    _threads,
    freeze_heap,
    limit_blas_threads,
    set_torch_threads,
    softmax,
)
from ferlib.inputs import InputSpec

# ----------------------------------------------------------------------------- the factory
_EXPORTS: OrderedDict[tuple, bytes] = OrderedDict()
_EXPORTS_LOCK = threading.Lock()
_EXPORTS_MAX = 4


def _onnx_blob(model, card: dict, spec, cache: bool) -> bytes:
    """ONNX bytes of a checkpoint's model, exported once per process per (weights hash, input spec, model config)."""
    card = card or {}
    key = (card.get("weights_sha256"), json.dumps(card.get("input"), sort_keys=True),
           json.dumps(card.get("model"), sort_keys=True), export.OPSET)
    if cache and key[0]:
        with _EXPORTS_LOCK:
            if key in _EXPORTS:
                _EXPORTS.move_to_end(key)
                return _EXPORTS[key]
    blob = export.onnx_bytes(model, card=card or None, spec=spec)
    if cache and key[0]:
        with _EXPORTS_LOCK:
            _EXPORTS[key] = blob
            while len(_EXPORTS) > _EXPORTS_MAX:
                _EXPORTS.popitem(last=False)
    return blob


def load_runner(checkpoint, backend: str = DEFAULT_BACKEND, threads: int = DEFAULT_THREADS,
                max_batch: int | None = 16) -> Runner:
    """The runner of a model.

    checkpoint: a checkpoint path (stem, .json or .safetensors) or a shipped model's bare name; a
    `.onnx` or TorchScript (`.pt`, `.ts`) file written by `ferlib export`; a `(model, card)` pair;
    or a Runner (returned as it is). backend: "auto" (ONNX Runtime where the model exports, else
    eager PyTorch; the runner's `fallback_reason` says why), "onnx", "torchscript" or "torch".
    threads: the runner's intra-op threads (see the module docstring).
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    threads = _threads(threads)
    limit_blas_threads(threads)
    if isinstance(checkpoint, Runner):
        return checkpoint
    path = None
    if isinstance(checkpoint, (str, Path)):
        suffix = Path(checkpoint).suffix.lower()
        if suffix in ONNX_SUFFIXES or suffix in TORCHSCRIPT_SUFFIXES:
            kind = "onnx" if suffix in ONNX_SUFFIXES else "torchscript"
            if backend not in ("auto", kind):
                raise InputError(f"{checkpoint} is a {kind} export: it runs only with backend {kind} or auto, "
                                 f"not {backend}")
            loaded = (OnnxRunner(checkpoint, threads, max_batch) if kind == "onnx"
                      else TorchScriptRunner.load(checkpoint, threads))
            loaded.spec = InputSpec.from_dict(loaded.card["input"]) if loaded.card and "input" in loaded.card else None
            return loaded
        path, model, card = read_checkpoint(checkpoint)
    elif isinstance(checkpoint, tuple) and len(checkpoint) == 2 and isinstance(checkpoint[0], torch.nn.Module):
        model, card = checkpoint
    else:
        raise InputError(f"cannot make a runner of {type(checkpoint).__name__}: give a checkpoint path or name, "
                         "an exported .onnx/.pt file, or a (model, card) pair")
    model.eval()
    spec = InputSpec.from_dict(card["input"]) if card and "input" in card else None
    name = (card or {}).get("name") or (path.stem if path else getattr(model, "registry_name", None)
                                        or type(model).__name__)
    runner: Runner
    reason = None
    if backend in ("onnx", "auto"):
        try:
            runner = OnnxRunner(_onnx_blob(model, card, spec, cache=path is not None), threads, max_batch,
                                task=model.task)
        except FerError as e:
            if backend == "onnx":
                raise
            reason = str(e)  # e.g. distance_mlp with clarity strata: data-dependent routing
            runner = TorchRunner(model, card, threads)
    elif backend == "torchscript":
        runner = TorchScriptRunner(export.traced_torchscript(model, spec), export.input_keys(model), card,
                                   threads, task=model.task)
    else:
        runner = TorchRunner(model, card, threads)
    runner.card, runner.name, runner.path, runner.fallback_reason = card, name, path, reason
    runner.spec = spec
    return runner


__all__ = ["BACKENDS", "CARD_KEY", "DEFAULT_BACKEND", "DEFAULT_THREADS", "KEYS_KEY", "OnnxRunner", "Runner",
           "TorchRunner", "TorchScriptRunner", "freeze_heap", "load_runner", "set_torch_threads", "softmax"]
