"""The runners: a model behind a small interface, whatever runs it (ONNX Runtime, TorchScript, eager
PyTorch). `ferlib.inference.runtime.load_runner` makes them; `ferlib.inference.export` writes the
files two of them load.

A runner has `backend` ("onnx" | "torchscript" | "torch"), `task` ("classification" | "keypoints"),
`input_keys` (the batch keys it reads, in order), `card` (the model card, or None), `classes` and
`threads`; calling it on a batch dict (torch tensors or numpy arrays) gives numpy float32:
class probabilities (N, C) for a classifier, the raw outputs (e.g. (N, P, 2) points) otherwise;
`outputs(batch)` gives the raw outputs (logits) of any runner. Threads: see ferlib.inference.runtime.
"""
from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ferlib.errors import InputError, ModelFileError
from ferlib.inputs.spec import InputSpec

BACKENDS = ("auto", "onnx", "torchscript", "torch")
"""`load_runner` backends; "auto" = ONNX Runtime where the model exports, else PyTorch."""
DEFAULT_BACKEND = "auto"
DEFAULT_THREADS = 1
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
CARD_KEY = "ferlib_card"
KEYS_KEY = "ferlib_input_keys"


def _as_array(key: str, v) -> np.ndarray:
    a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return np.ascontiguousarray(a, dtype=np.int64 if key == "stratum" else np.float32)


def _as_tensor(key: str, v) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    return torch.from_numpy(_as_array(key, v))


def _feed(keys, batch: dict) -> list:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise InputError(f"the model needs batch keys {list(keys)}; missing {missing} (got {sorted(batch)})")
    return [batch[k] for k in keys]


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 in float32 (numerically stable)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def limit_blas_threads(threads: int) -> None:
    """Cap the BLAS libraries' threads (numpy's and scipy's OpenBLAS, as loaded) at `threads`,
    process-wide, through threadpoolctl (OPENBLAS_NUM_THREADS does the same, but only before numpy
    loads). The per-face numpy math (the affine fit, head pose) is a few 3x3 and 13x4 problems:
    OpenBLAS's extra threads only wake up to contend with MediaPipe's own (a 3x3 inverse took
    0.8 ms instead of 5 us in a `ferlib predict` profile on this 2-core machine). torch sets its
    own BLAS's threads in `torch.set_num_threads`, so this runs on every runner load, not once."""
    from threadpoolctl import threadpool_limits  # importing it sets KMP_DUPLICATE_LIB_OK: not at import time

    threadpool_limits(limits=threads, user_api="blas")


def freeze_heap() -> None:
    """Take every object alive now out of the cyclic garbage collector's walks (`gc.freeze`), for a
    process about to run frames for a while (`ferlib predict`, a Live or Studio stream).

    A process with torch, MediaPipe (and Streamlit) loaded holds millions of long-lived objects; a
    full collection walks them all. In the app one ran about once a second during a stream, holding
    the GIL a median 214 ms each time: the video worker stalled and processed 20 of 30 frames per
    second (scripts/bench_browser.py, 2026-11-28; 28 after this). Call it once, after the models are
    loaded: what is frozen is never collected, so never per frame."""
    gc.collect()
    gc.freeze()


def set_torch_threads(threads: int) -> None:
    """torch's intra-op thread count, set only when it differs (setting it is process-wide)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _threads(threads) -> int:
    try:
        n = int(threads)
    except (TypeError, ValueError):
        raise InputError(f"threads must be a positive integer, got {threads!r}") from None
    if n < 1:
        raise InputError(f"threads must be >= 1, got {threads!r}")
    return n


class Runner:
    """The interface every backend implements (see the module docstring)."""

    backend = ""
    task = "classification"

    def __init__(self, input_keys, card: dict | None, threads: int, name: str, task: str | None = None):
        self.input_keys: tuple[str, ...] = tuple(input_keys)
        self.card = card
        self.threads = _threads(threads)
        self.name = name
        self.path: Path | None = None
        self.fallback_reason: str | None = None  # why "auto" did not give ONNX Runtime
        self.spec: InputSpec | None = None  # the card's input spec (load_runner sets it)
        if task is not None:
            self.task = task
        elif card is not None and "keypoints" in card:
            self.task = "keypoints"

    @property
    def classes(self) -> tuple[str, ...] | None:
        return tuple(self.card["classes"]) if self.card and "classes" in self.card else None

    def outputs(self, batch: dict) -> np.ndarray:
        """Raw model outputs (logits of a classifier) as float32 numpy."""
        raise NotImplementedError

    def __call__(self, batch: dict) -> np.ndarray:
        """Class probabilities of a classifier (softmax of its outputs plus the card's `output_bias`,
        the per-class logit adjustment fitted on validation data, if it has one); raw outputs otherwise."""
        out = self.outputs(batch)
        if self.task != "classification":
            return out
        bias = self.card.get("output_bias") if self.card else None
        return softmax(out if bias is None else out + np.asarray(bias, np.float32))

    def eval(self) -> "Runner":  # models and runners alike can be put in eval mode
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend}, threads={self.threads})"


class TorchRunner(Runner):
    """Eager PyTorch (the training framework) behind the runner interface."""

    backend = "torch"

    def __init__(self, model, card: dict | None = None, threads: int = DEFAULT_THREADS, name: str | None = None):
        keys = tuple(getattr(model, "input_keys", ()) or ())
        if not keys:
            raise InputError(f"model {type(model).__name__} declares no input_keys")
        super().__init__(keys, card, threads, name or getattr(model, "registry_name", None) or type(model).__name__,
                         task=getattr(model, "task", None))
        self.model = model.eval()

    def outputs(self, batch: dict) -> np.ndarray:
        set_torch_threads(self.threads)
        feed = {k: _as_tensor(k, v) for k, v in zip(self.input_keys, _feed(self.input_keys, batch))}
        with torch.inference_mode():
            return self.model(feed).float().cpu().numpy()


class TorchScriptRunner(Runner):
    """A traced TorchScript module (positional inputs in `input_keys` order)."""

    backend = "torchscript"

    def __init__(self, module, keys, card: dict | None = None, threads: int = DEFAULT_THREADS,
                 name: str = "torchscript", task: str | None = None):
        super().__init__(keys, card, threads, name, task)
        self.module = module

    @classmethod
    def load(cls, path, threads: int = DEFAULT_THREADS) -> "TorchScriptRunner":
        """A file written by `ferlib.inference.export.export_torchscript` (TorchScript only: no pickled Python)."""
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
        r = cls(module.eval(), json.loads(extra[KEYS_KEY]), card, threads, name=str(p))
        r.path = p
        return r

    def outputs(self, batch: dict) -> np.ndarray:
        set_torch_threads(self.threads)
        args = [_as_tensor(k, v) for k, v in zip(self.input_keys, _feed(self.input_keys, batch))]
        with torch.no_grad():
            return self.module(*args).float().numpy()


class OnnxRunner(Runner):
    """A ferlib ONNX export under ONNX Runtime (CPU).

    source: path of a .onnx file or its bytes. threads: intra-op threads (idle ones sleep instead
    of spinning: the cores are shared with MediaPipe's graphs). max_batch: larger batches run as
    consecutive chunks of this many faces (same outputs; on this machine the landmark model runs
    ~14,000 faces/s in chunks of 8-16 and ~10,000 as one batch of 64, its activations then
    outgrowing the cache); None = one call. `card`: the model card stored at export (None if none).
    """

    backend = "onnx"

    def __init__(self, source, threads: int = DEFAULT_THREADS, max_batch: int | None = 16, task: str | None = None):
        import onnxruntime as ort

        name = f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
        path = None
        if not isinstance(source, (bytes, bytearray)):
            path = Path(source)
            if not path.is_file():
                raise ModelFileError(f"ONNX model {path}: no such file")
            source = path.read_bytes()
        if max_batch is not None and max_batch < 1:
            raise InputError(f"max_batch must be >= 1 or None, got {max_batch}")
        threads = _threads(threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(bytes(source), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad models
            raise ModelFileError(f"ONNX model {name}: cannot be loaded ({type(e).__name__}: {e})") from None
        meta = session.get_modelmeta().custom_metadata_map
        if KEYS_KEY not in meta:
            raise ModelFileError(f"ONNX model {name}: not a ferlib export (no {KEYS_KEY!r} metadata)")
        card = json.loads(meta[CARD_KEY]) if CARD_KEY in meta else None
        super().__init__(json.loads(meta[KEYS_KEY]), card, threads, name, task)
        self.session, self.max_batch, self.path = session, max_batch, path

    def outputs(self, batch: dict) -> np.ndarray:
        feed = {k: _as_array(k, v) for k, v in zip(self.input_keys, _feed(self.input_keys, batch))}
        n, step = len(feed[self.input_keys[0]]), self.max_batch
        if step is None or n <= step:
            return self.session.run(None, feed)[0]
        return np.concatenate([self.session.run(None, {k: v[i:i + step] for k, v in feed.items()})[0]
                               for i in range(0, n, step)])


__all__ = ["BACKENDS", "CARD_KEY", "DEFAULT_BACKEND", "DEFAULT_THREADS", "KEYS_KEY", "ONNX_SUFFIXES", "OnnxRunner",
           "Runner", "TorchRunner", "TorchScriptRunner", "TORCHSCRIPT_SUFFIXES", "set_torch_threads", "softmax"]
