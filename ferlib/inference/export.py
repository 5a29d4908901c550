"""Export a model to ONNX / TorchScript, checked against PyTorch.

`onnx_bytes(model)` traces a model to ONNX (opset OPSET, dynamic batch axis, one named input per
batch key, the model card in the metadata) and `traced_torchscript(model)` to TorchScript
(deprecated in torch 2.13; ONNX is the fast path): what `ferlib.inference.runtime.load_runner` runs,
unchecked, since every model family's export is checked in the tests (tests/test_export.py). A model
that cannot be traced says so (`FerModel.export_refused`) and is refused here.

`export_onnx` / `export_torchscript` / `export_checkpoint` (`ferlib export`) also check that the
export reproduces PyTorch within PARITY_ATOL on two example batches of different sizes (through
ferlib.inference.runners, which run the files), and write the file.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferlib.errors import InputError, ModelFileError
from ferlib.faces.normalize import canonical_face
from ferlib.fsutil import atomic_write_bytes, json_default
from ferlib.inference.checkpoint import card_spec, read_checkpoint
from ferlib.inference.runners import CARD_KEY, KEYS_KEY, OnnxRunner, TorchScriptRunner
from ferlib.inputs import InputSpec, build_batch, spec_for_model
from ferlib.models.registry import FerModel

OPSET = 17
"""ONNX opset of exported models (onnxruntime 1.31 runs opsets up to 23)."""
PARITY_ATOL = 1e-4
FORMATS = ("onnx", "torchscript")


class _Positional(nn.Module):
    """The model with positional tensor inputs in `keys` order (what the exporters need)."""

    def __init__(self, model: FerModel, keys: tuple[str, ...]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.keys, tensors)))


def _pool_matrix(length: int, out: int) -> torch.Tensor:
    """(length, out) averaging matrix with adaptive pooling's bins."""
    p = torch.zeros(length, out)
    for i in range(out):
        a, b = (i * length) // out, -(-((i + 1) * length) // out)
        p[a:b, i] = 1.0 / (b - a)
    return p


class _PoolMatrix(nn.Module):
    """AdaptiveAvgPool1d for one fixed input length as a constant matrix product (same bins), which
    the ONNX exporter supports when the output size does not divide the input length."""

    weight: torch.Tensor  # buffer

    def __init__(self, length: int, out: int):
        super().__init__()
        self.register_buffer("weight", _pool_matrix(length, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class _PoolMatrix2d(nn.Module):
    """AdaptiveAvgPool2d for one fixed (H, W) input as two constant matrix products (same bins)."""

    rows: torch.Tensor  # buffers
    cols: torch.Tensor

    def __init__(self, size: tuple[int, ...], out: tuple[int, ...]):
        super().__init__()
        self.register_buffer("rows", _pool_matrix(size[0], out[0]))
        self.register_buffer("cols", _pool_matrix(size[1], out[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.cols).transpose(-1, -2) @ self.rows).transpose(-1, -2)


def _out_size(module, size: tuple[int, ...]) -> tuple[int, ...]:
    o = module.output_size
    o = (o,) * len(size) if isinstance(o, int) else tuple(o)
    return tuple(s if v is None else int(v) for v, s in zip(o, size))


def _onnx_ready(model: FerModel, batch: dict[str, torch.Tensor]) -> FerModel:
    """`model` itself, or a copy whose non-divisible adaptive average pools (1d and 2d) are constant
    matrix products for the input sizes that `batch` (a batch of the model's real input shape) gives them."""
    sizes: dict[str, tuple[int, ...]] = {}
    pools = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)

    def hook(name, dims):
        def record(module, args):
            sizes[name] = tuple(int(d) for d in args[0].shape[-dims:])
        return record

    hooks = [m.register_forward_pre_hook(hook(name, 1 if isinstance(m, nn.AdaptiveAvgPool1d) else 2))
             for name, m in model.named_modules() if isinstance(m, pools)]
    try:
        _torch_out(model, batch)
    finally:
        for h in hooks:
            h.remove()
    todo = {n: s for n, s in sizes.items()
            if any(a % b for a, b in zip(s, _out_size(model.get_submodule(n), s)))}
    if not todo:
        return model
    clone = copy.deepcopy(model).eval()
    for name, size in todo.items():
        parent, _, attr = name.rpartition(".")
        out = _out_size(clone.get_submodule(name), size)
        layer = _PoolMatrix(size[0], out[0]) if len(size) == 1 else _PoolMatrix2d(size, out)
        setattr(clone.get_submodule(parent) if parent else clone, attr, layer)
    return clone


def input_keys(model: FerModel) -> tuple[str, ...]:
    """The batch keys a model reads, in a fixed order."""
    keys = tuple(model.input_keys)
    if not keys:
        raise InputError(f"model {type(model).__name__} declares no input_keys; cannot export it")
    return keys


def example_batch(model: FerModel, n: int = 2, seed: int = 0, spec: InputSpec | None = None) -> dict[str, torch.Tensor]:
    """A realistic input batch of `n` faces for `model`, built by `build_batch` from jittered canonical
    faces (landmarks in pixels; the first is the neutral baseline if the spec subtracts one) and grey
    crops alternating between noise and a smooth gradient (so clarity strata differ)."""
    spec = spec or spec_for_model(model)
    rng = np.random.default_rng(seed)
    lm = canonical_face()[None] * 60.0 + np.array([160.0, 120.0, 0.0]) + rng.normal(0, 1.5, (n, 478, 3))
    s = spec.image_size
    crops = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
    crops[1::2] = np.linspace(64, 192, s, dtype=np.uint8)[None, :, None]  # smooth: low clarity stratum
    batch = build_batch(spec, landmarks_px=lm, crops=crops if spec.needs_crops else None,
                        baseline=lm[0] if spec.subtract_baseline else None)
    return {k: batch[k] for k in input_keys(model)}


def _torch_out(model: FerModel, batch: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return model(batch).float().numpy()


def _check_parity(name: str, model: FerModel, run, spec: InputSpec | None) -> float:
    """Largest |exported - torch| over two example batches (sizes 3 and 5); raises if > PARITY_ATOL."""
    worst = 0.0
    for n, seed in ((3, 1), (5, 2)):
        batch = example_batch(model, n, seed, spec)
        ref = _torch_out(model, batch)
        try:
            got = np.asarray(run(batch))
        except Exception as e:  # ONNX Runtime / TorchScript raise their own types
            raise ModelFileError(f"{name}: the exported model fails on a batch of {n} ({type(e).__name__}: "
                                 f"{str(e)[:300]}); its forward depends on the data in a way that tracing "
                                 "cannot capture") from None
        if got.shape != ref.shape:
            raise ModelFileError(f"{name}: exported model gives shape {got.shape} for a batch of {n}, "
                                 f"PyTorch gives {ref.shape}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    if not worst <= PARITY_ATOL:
        raise ModelFileError(f"{name}: exported outputs differ from PyTorch by {worst:.2e} > {PARITY_ATOL:g}")
    return worst


def _refuse(model: FerModel, what: str) -> None:
    reason = getattr(model, "export_refused", None)
    if reason:
        raise ModelFileError(f"{what} export of {model.registry_name or type(model).__name__} refused: {reason}")


def onnx_bytes(model: FerModel, card: dict | None = None, opset: int = OPSET, spec: InputSpec | None = None) -> bytes:
    """ONNX bytes of `model` (eval mode; batch axis dynamic; the card (if any) and input keys in the
    metadata), not checked against PyTorch (export_onnx checks)."""
    import onnx

    _refuse(model, "ONNX")
    model.eval()
    keys = input_keys(model)
    batch = example_batch(model, 2, 0, spec)
    wrapped = _Positional(_onnx_ready(model, batch), keys).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        try:
            # torch annotates `f` as a path; the exporter writes to a file object as documented
            torch.onnx.export(wrapped, tuple(batch.values()), buf,  # type: ignore[arg-type]
                              dynamo=False, opset_version=opset,
                              input_names=list(keys), output_names=["output"],
                              dynamic_axes={k: {0: "batch"} for k in (*keys, "output")})
        except Exception as e:  # the exporter raises its own types for unsupported operators
            raise ModelFileError(f"ONNX export of {model.registry_name or type(model).__name__} failed "
                                 f"({type(e).__name__}: {str(e)[:300]})") from None
    proto = onnx.load_from_string(buf.getvalue())
    meta = {KEYS_KEY: json.dumps(list(keys))}
    if card is not None:
        meta[CARD_KEY] = json.dumps(card, default=json_default)
    onnx.helper.set_model_props(proto, meta)
    return proto.SerializeToString()


def export_onnx(model: FerModel, out=None, card: dict | None = None, opset: int = OPSET,
                spec: InputSpec | None = None) -> bytes:
    """`onnx_bytes`, checked against PyTorch, written atomically to `out` when given."""
    blob = onnx_bytes(model, card, opset, spec)
    _check_parity(f"ONNX export of {model.registry_name or type(model).__name__}", model,
                  OnnxRunner(blob).outputs, spec)
    if out is not None:
        atomic_write_bytes(Path(out), blob)
    return blob


def traced_torchscript(model: FerModel, spec: InputSpec | None = None) -> torch.jit.ScriptModule:
    """`model` traced to TorchScript (positional inputs in `input_keys` order), not checked."""
    _refuse(model, "TorchScript")
    model.eval()
    keys = input_keys(model)
    args = tuple(example_batch(model, 2, 0, spec).values())
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(_Positional(model, keys).eval(), args, check_trace=False)


def export_torchscript(model: FerModel, out=None, card: dict | None = None,
                       spec: InputSpec | None = None) -> TorchScriptRunner:
    """`traced_torchscript`, checked against PyTorch, saved atomically to `out` when given (card and
    keys as extra files); returns its runner."""
    traced = traced_torchscript(model, spec)
    keys = input_keys(model)
    runner = TorchScriptRunner(traced, keys, card, name=f"traced {model.registry_name or type(model).__name__}",
                               task=model.task)
    _check_parity(f"TorchScript export of {model.registry_name or type(model).__name__}", model,
                  runner.outputs, spec)
    if out is not None:
        buf = io.BytesIO()
        extra = {KEYS_KEY: json.dumps(list(keys))}
        if card is not None:
            extra[CARD_KEY] = json.dumps(card, default=json_default)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
            torch.jit.save(traced, buf, _extra_files=extra)
        atomic_write_bytes(Path(out), buf.getvalue())
    return runner


def export_checkpoint(model: str, fmt: str, out) -> tuple[Path, float]:
    """Export a checkpoint (path or shipped name) -> (written path, max |diff| to PyTorch)."""
    if fmt not in FORMATS:
        raise InputError(f"export format must be one of {FORMATS}, got {fmt!r}")
    _, net, card = read_checkpoint(model)
    spec = card_spec(card)
    out = Path(out)
    loaded: OnnxRunner | TorchScriptRunner
    if fmt == "onnx":
        export_onnx(net, out, card, spec=spec)
        loaded = OnnxRunner(out)
    else:
        export_torchscript(net, out, card, spec)
        loaded = TorchScriptRunner.load(out)
    return out, _check_parity(str(out), net, loaded.outputs, spec)


__all__ = ["FORMATS", "OPSET", "PARITY_ATOL", "example_batch", "export_checkpoint", "export_onnx",
           "export_torchscript", "input_keys", "onnx_bytes", "traced_torchscript"]
