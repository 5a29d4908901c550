"""Export a model to ONNX / TorchScript, and run the exported model with the torch model's call.

`export_onnx(model)` returns ONNX bytes (opset OPSET, dynamic batch axis, one named input per
batch key, the model card in the metadata) after checking that ONNX Runtime reproduces the PyTorch
outputs within PARITY_ATOL on two example batches of different sizes. `OnnxModel` runs such a
file or blob: `OnnxModel(...)(batch_dict) -> logits tensor`, like the torch model, so a Pipeline can
use it (`Pipeline((OnnxModel.from_torch(model), card))`). `export_torchscript` traces the model (TorchScript is deprecated in torch 2.13; ONNX is the fast path).
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ferlib.errors import InputError, ModelFileError
from ferlib.inputs import InputSpec, build_batch, spec_for_model
from ferlib.models.registry import FerModel
from ferlib.store import atomic_write_bytes

OPSET = 17
"""ONNX opset of exported models (onnxruntime 1.31 runs opsets up to 23)."""
PARITY_ATOL = 1e-4
FORMATS = ("onnx", "torchscript")
CARD_KEY = "ferlib_card"
KEYS_KEY = "ferlib_input_keys"


class _Positional(nn.Module):
    """The model with positional tensor inputs in `keys` order (what the exporters need)."""

    def __init__(self, model: FerModel, keys: tuple[str, ...]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.keys, tensors)))


class _PoolMatrix(nn.Module):
    """AdaptiveAvgPool1d for one fixed input length as a constant matrix product (same bins), which
    the ONNX exporter supports when the output size does not divide the input length."""

    def __init__(self, length: int, out: int):
        super().__init__()
        p = torch.zeros(length, out)
        for i in range(out):
            a, b = (i * length) // out, -(-((i + 1) * length) // out)
            p[a:b, i] = 1.0 / (b - a)
        self.register_buffer("weight", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def _onnx_ready(model: FerModel, batch: dict[str, torch.Tensor]) -> FerModel:
    """`model` itself, or a copy whose non-divisible AdaptiveAvgPool1d layers are _PoolMatrix layers
    for the input lengths that `batch` (a batch of the model's real input shape) gives them."""
    import copy

    lengths: dict[str, int] = {}
    def hook(name):
        def record(module, args):
            lengths[name] = int(args[0].shape[-1])
        return record

    hooks = [m.register_forward_pre_hook(hook(name))
             for name, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool1d)]
    try:
        _torch_out(model, batch)
    finally:
        for h in hooks:
            h.remove()
    todo = {n: L for n, L in lengths.items() if L % model.get_submodule(n).output_size}
    if not todo:
        return model
    clone = copy.deepcopy(model).eval()
    for name, length in todo.items():
        parent, _, attr = name.rpartition(".")
        setattr(clone.get_submodule(parent) if parent else clone, attr,
                _PoolMatrix(length, int(clone.get_submodule(name).output_size)))
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
    from ferlib.normalize import canonical_face

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


def export_onnx(model: FerModel, out=None, card: dict | None = None, opset: int = OPSET,
                spec: InputSpec | None = None) -> bytes:
    """ONNX bytes of `model` (eval mode; batch axis dynamic), checked against PyTorch; written
    atomically to `out` when given. The card (if any) and input keys go into the metadata."""
    import onnx

    model.eval()
    keys = input_keys(model)
    batch = example_batch(model, 2, 0, spec)
    wrapped = _Positional(_onnx_ready(model, batch), keys).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        torch.onnx.export(wrapped, tuple(batch.values()), buf, dynamo=False, opset_version=opset,
                          input_names=list(keys), output_names=["output"],
                          dynamic_axes={k: {0: "batch"} for k in (*keys, "output")})
    proto = onnx.load_from_string(buf.getvalue())
    meta = {KEYS_KEY: json.dumps(list(keys))}
    if card is not None:
        meta[CARD_KEY] = json.dumps(card, default=_json_default)
    onnx.helper.set_model_props(proto, meta)
    blob = proto.SerializeToString()
    _check_parity(f"ONNX export of {model.registry_name or type(model).__name__}", model,
                  OnnxModel(blob), spec)
    if out is not None:
        atomic_write_bytes(Path(out), blob)
    return blob


def export_torchscript(model: FerModel, out=None, card: dict | None = None,
                       spec: InputSpec | None = None) -> "TorchScriptModel":
    """Trace `model` to TorchScript (positional inputs in `input_keys` order), check it against
    PyTorch, and save it atomically to `out` when given (card and keys as extra files)."""
    model.eval()
    keys = input_keys(model)
    args = tuple(example_batch(model, 2, 0, spec).values())
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Positional(model, keys).eval(), args, check_trace=False)
    runner = TorchScriptModel(traced, keys, card)
    _check_parity(f"TorchScript export of {model.registry_name or type(model).__name__}", model,
                  lambda b: runner(b).numpy(), spec)
    if out is not None:
        buf = io.BytesIO()
        extra = {KEYS_KEY: json.dumps(list(keys))}
        if card is not None:
            extra[CARD_KEY] = json.dumps(card, default=_json_default)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
            torch.jit.save(traced, buf, _extra_files=extra)
        atomic_write_bytes(Path(out), buf.getvalue())
    return runner


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _feed(keys, batch: dict) -> list:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise InputError(f"exported model needs batch keys {list(keys)}; missing {missing} (got {sorted(batch)})")
    return [batch[k] for k in keys]


class OnnxModel:
    """An exported model under ONNX Runtime, called like the torch model: batch dict -> torch tensor.

    source: path of a .onnx file or its bytes. threads: ONNX Runtime intra-op threads. max_batch:
    larger batches run as consecutive chunks of this many faces (same outputs; on this machine the
    landmark model runs ~14,000 faces/s in chunks of 8-16 and ~10,000 as one batch of 64, its
    activations then outgrowing the cache); None = one call. `card` is the model card stored at
    export (None if there was none). `eval()` is a no-op for Pipeline.
    """

    task = "classification"

    def __init__(self, source, threads: int = 1, max_batch: int | None = 16):
        import onnxruntime as ort

        name = f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
        if not isinstance(source, (bytes, bytearray)):
            p = Path(source)
            if not p.is_file():
                raise ModelFileError(f"ONNX model {p}: no such file")
            source = p.read_bytes()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning: the cores are shared with MediaPipe's graphs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(bytes(source), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            raise ModelFileError(f"ONNX model {name}: cannot be loaded ({type(e).__name__}: {e})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if KEYS_KEY not in meta:
            raise ModelFileError(f"ONNX model {name}: not a ferlib export (no {KEYS_KEY!r} metadata)")
        self.input_keys = tuple(json.loads(meta[KEYS_KEY]))
        self.card: dict | None = json.loads(meta[CARD_KEY]) if CARD_KEY in meta else None
        self.name = name
        if max_batch is not None and max_batch < 1:
            raise InputError(f"max_batch must be >= 1 or None, got {max_batch}")
        self.max_batch = max_batch

    @classmethod
    def from_torch(cls, model: FerModel, threads: int = 1, card: dict | None = None,
                   spec: InputSpec | None = None, max_batch: int | None = 16) -> "OnnxModel":
        """Export in memory (parity-checked) and load into ONNX Runtime."""
        m = cls(export_onnx(model, card=card, spec=spec), threads, max_batch)
        m.task = model.task
        return m

    def numpy(self, batch: dict) -> np.ndarray:
        """Outputs as a float32 numpy array."""
        feed = {}
        for k, v in zip(self.input_keys, _feed(self.input_keys, batch)):
            a = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            feed[k] = np.ascontiguousarray(a, dtype=np.int64 if k == "stratum" else np.float32)
        n, step = len(feed[self.input_keys[0]]), self.max_batch
        if step is None or n <= step:
            return self.session.run(None, feed)[0]
        return np.concatenate([self.session.run(None, {k: v[i:i + step] for k, v in feed.items()})[0]
                               for i in range(0, n, step)])

    def __call__(self, batch: dict) -> torch.Tensor:
        return torch.from_numpy(self.numpy(batch))

    def eval(self) -> "OnnxModel":
        return self


class TorchScriptModel:
    """A traced TorchScript module called like the torch model: batch dict -> torch tensor."""

    def __init__(self, module: torch.jit.ScriptModule, keys, card: dict | None = None):
        self.module, self.input_keys, self.card = module, tuple(keys), card

    @classmethod
    def load(cls, path) -> "TorchScriptModel":
        """Load a file written by `export_torchscript` (TorchScript only: no pickled Python objects)."""
        p = Path(path)
        if not p.is_file():
            raise ModelFileError(f"TorchScript model {p}: no such file")
        extra = {KEYS_KEY: "", CARD_KEY: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError) as e:
            raise ModelFileError(f"TorchScript model {p}: cannot be loaded ({e})") from None
        if not extra[KEYS_KEY]:
            raise ModelFileError(f"TorchScript model {p}: not a ferlib export (no {KEYS_KEY} extra file)")
        card = json.loads(extra[CARD_KEY]) if extra[CARD_KEY] else None
        return cls(module.eval(), json.loads(extra[KEYS_KEY]), card)

    def __call__(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*_feed(self.input_keys, batch))

    def eval(self) -> "TorchScriptModel":
        return self


def export_checkpoint(model: str, fmt: str, out) -> tuple[Path, float]:
    """Export a checkpoint (path or shipped name) -> (written path, max |diff| to PyTorch)."""
    from ferlib.checkpoint import card_spec, load_checkpoint, resolve_checkpoint

    if fmt not in FORMATS:
        raise InputError(f"export format must be one of {FORMATS}, got {fmt!r}")
    net, card = load_checkpoint(resolve_checkpoint(model))
    spec = card_spec(card)
    out = Path(out)
    if fmt == "onnx":
        export_onnx(net, out, card, spec=spec)
        loaded = OnnxModel(out)
    else:
        export_torchscript(net, out, card, spec)
        loaded = TorchScriptModel.load(out)
    return out, _check_parity(str(out), net, lambda b: loaded(b).numpy(), spec)


__all__ = ["FORMATS", "OPSET", "OnnxModel", "PARITY_ATOL", "TorchScriptModel", "example_batch",
           "export_checkpoint", "export_onnx", "export_torchscript", "input_keys"]
