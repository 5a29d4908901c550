"""Checkpoints: `<stem>.safetensors` (weights) + `<stem>.json` (model card), validated on load.

The card holds `format`, `version`, `ferlib_version`, `model` (registry name + kwargs), `classes`
(ordered canonical names), `input` (an InputSpec), `training`, `data`, `metrics` and
`weights_sha256`. Weights are never unpickled; anything that is not exactly a checkpoint this
version of ferlib wrote raises ModelFileError saying which file and why.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ferlib import __version__, locations
from ferlib.classes import CLASSES
from ferlib.errors import FerError, ModelFileError
from ferlib.faces.normalize import KEYPOINT_INDICES, canonical_face_sha256
from ferlib.fsutil import atomic_write_bytes, json_default, sha256_bytes
from ferlib.inputs import InputSpec
from ferlib.models import create_model, list_models
from ferlib.models.registry import FerModel

FORMAT = "ferlib-checkpoint"
VERSION = 1
_MAX_HEADER = 16 * 1024 * 1024


def checkpoint_paths(path) -> tuple[Path, Path]:
    """(weights, card) paths of a checkpoint given its stem, .safetensors or .json path."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def existing_checkpoint(path) -> Path | None:
    """The card path of the checkpoint at `path` (stem, .safetensors or .json) when both its files
    exist, else None."""
    weights, card = checkpoint_paths(path)
    return card if weights.is_file() and card.is_file() else None


MODELS_DIR = locations.models_dir()
"""Where the shipped models are (ferlib.locations.models_dir() at import: $FERLIB_MODELS, the
checkout's models/, or <sys.prefix>/share/ferlib/models)."""


def resolve_checkpoint(ref, models_dir: Path | None = None) -> Path:
    """The card path of a checkpoint reference: a path (stem, .json or .safetensors) that exists, or
    the bare name of a shipped model in `models_dir` (default: ferlib.locations.models_dir(), read
    at call time). Unknown: ModelFileError listing the names."""
    if models_dir is None:
        models_dir = locations.models_dir()
    weights, card = checkpoint_paths(ref)
    if weights.is_file() or card.is_file():
        return card
    if Path(ref).parent == Path("."):
        shipped_w, shipped_c = checkpoint_paths(Path(models_dir) / Path(ref).name)
        if shipped_w.is_file():
            return shipped_c
    names = ", ".join(sorted(p.stem for p in Path(models_dir).glob("*.safetensors")))
    raise ModelFileError(f"model {str(ref)!r}: checkpoint file {weights} does not exist and no shipped model "
                         f"has that name (shipped: {names or 'none'})")


def make_card(model: FerModel, classes, spec: InputSpec, training: dict | None = None,
              data: dict | None = None, metrics: dict | None = None, keypoints=None) -> dict:
    """A model card (save_checkpoint adds format, version, model and the weights' hash)."""
    card = {"classes": list(classes), "input": spec.to_dict(), "training": training or {},
            "data": data or {}, "metrics": metrics or {}}
    if spec.needs_landmarks and spec.method in ("proposed", "similarity"):
        card["canonical_face_sha256"] = canonical_face_sha256()
    if model.task == "keypoints":
        card["keypoints"] = list(keypoints or KEYPOINT_INDICES)
    return card


def _validate_card(card, name: str) -> tuple[str, dict, InputSpec]:
    if not isinstance(card, dict):
        raise ModelFileError(f"{name}: model card is not a JSON object")
    missing = [k for k in ("format", "version", "model", "classes", "input", "weights_sha256") if k not in card]
    if missing:
        raise ModelFileError(f"{name}: model card lacks {missing}; not a ferlib checkpoint")
    if card["format"] != FORMAT:
        raise ModelFileError(f"{name}: format {card['format']!r} is not {FORMAT!r}")
    if card["version"] != VERSION:
        raise ModelFileError(f"{name}: checkpoint version {card['version']!r} is not supported "
                             f"(this ferlib {__version__} reads version {VERSION})")
    m = card["model"]
    if not (isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("kwargs"), dict)):
        raise ModelFileError(f"{name}: 'model' must be {{'name': str, 'kwargs': {{...}}}}, got {m!r}")
    if m["name"] not in list_models():
        raise ModelFileError(f"{name}: unknown model {m['name']!r}; registered: {list_models()}")
    classes = card["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ModelFileError(f"{name}: 'classes' must be a list of class names, got {classes!r}")
    bad = [c for c in classes if c not in CLASSES]
    if bad or len(set(classes)) != len(classes):
        raise ModelFileError(f"{name}: class list {classes} has unknown {bad} or repeated names; "
                             f"classes must be distinct canonical names from {list(CLASSES)}")
    try:
        spec = InputSpec.from_dict(card["input"])
    except FerError as e:
        raise ModelFileError(f"{name}: bad input spec: {e}") from None
    bias = card.get("output_bias")
    if bias is not None and not (isinstance(bias, list) and len(bias) == len(classes)
                                 and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bias)):
        raise ModelFileError(f"{name}: 'output_bias' must be {len(classes)} finite numbers (one per class), "
                             f"got {bias!r}")
    return m["name"], m["kwargs"], spec


def save_checkpoint(model: FerModel, path_stem, card: dict) -> tuple[Path, Path]:
    """Write weights and card atomically; returns (weights path, card path)."""
    wpath, cpath = checkpoint_paths(path_stem)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    blob = st_save(state, metadata={"format": FORMAT})
    card = {**card, "format": FORMAT, "version": VERSION, "ferlib_version": __version__,
            "model": model.config(), "weights_file": wpath.name,
            "weights_sha256": sha256_bytes(blob)}
    _validate_card(card, str(cpath))
    if model.task == "classification" and len(card["classes"]) != model.num_classes:
        raise ModelFileError(f"{cpath}: {len(card['classes'])} classes in the card but the model has "
                             f"{model.num_classes} outputs")
    text = json.dumps(card, indent=2, sort_keys=False, default=json_default)
    atomic_write_bytes(wpath, blob)
    atomic_write_bytes(cpath, text.encode())
    return wpath, cpath


def _read_weights(wpath: Path) -> bytes:
    blob = wpath.read_bytes()
    if len(blob) < 8:
        raise ModelFileError(f"{wpath}: {len(blob)} bytes, truncated or not a safetensors file")
    if blob[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or blob[:2] == b"PK":
        raise ModelFileError(f"{wpath}: looks like a pickle / torch.save file, not safetensors; "
                             "ferlib never unpickles model files")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_MAX_HEADER, len(blob) - 8):
        raise ModelFileError(f"{wpath}: header length {n} does not fit the {len(blob)}-byte file: "
                             "truncated or not a safetensors file")
    try:
        header = json.loads(blob[8:8 + n])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ModelFileError(f"{wpath}: safetensors header does not parse ({e})") from None
    if 8 + n + end != len(blob):
        raise ModelFileError(f"{wpath}: size {len(blob)} bytes, header says {8 + n + end}: truncated or padded")
    return blob


def load_checkpoint(path) -> tuple[FerModel, dict]:
    """Load and validate a checkpoint (stem, .safetensors or .json path) -> (model in eval mode, card)."""
    wpath, cpath = checkpoint_paths(path)
    for p in (wpath, cpath):
        if not p.is_file():
            raise ModelFileError(f"checkpoint file {p} does not exist")
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{cpath}: model card is not valid JSON ({e})") from None
    name, kwargs, _ = _validate_card(card, str(cpath))
    check_canonical_face(card, str(cpath))
    blob = _read_weights(wpath)
    digest = sha256_bytes(blob)
    if digest != card["weights_sha256"]:
        raise ModelFileError(f"{wpath}: sha256 {digest[:12]}... does not match the card's "
                             f"{str(card['weights_sha256'])[:12]}...: weights changed or tampered with")
    try:
        state = st_load(blob)
    except SafetensorError as e:
        raise ModelFileError(f"{wpath}: safetensors data does not load ({e})") from None
    try:
        model = create_model(name, **kwargs)
    except FerError as e:
        raise ModelFileError(f"{cpath}: cannot build model {name!r} from the card: {e}") from None
    if model.task == "classification" and len(card["classes"]) != model.num_classes:
        raise ModelFileError(f"{cpath}: class list has {len(card['classes'])} names but the model "
                             f"has {model.num_classes} outputs")
    if model.task == "keypoints" and len(card.get("keypoints", [])) != model.hparams["num_keypoints"]:
        raise ModelFileError(f"{cpath}: a keypoint model needs 'keypoints' naming its "
                             f"{model.hparams['num_keypoints']} points, got {card.get('keypoints')!r}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        shapes = [f"{k}: {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]][:5]
        raise ModelFileError(f"{wpath}: weights do not match model {name!r}: missing {missing}, "
                             f"unexpected {extra}, shape mismatches {shapes}")
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()}, strict=True)
    model.eval()
    return model, card


# Card keys that hold for these exact weights only: a model trained or adapted from this one drops them
# (a personal model must read turned faces itself, not hand them to its base's expert).
WEIGHT_BOUND_KEYS = ("output_bias", "output_bias_note", "turned_expert")


def base_of(card: dict) -> dict:
    """A card as the start of a derived model's card (without WEIGHT_BOUND_KEYS)."""
    return {k: v for k, v in card.items() if k not in WEIGHT_BOUND_KEYS}


def read_checkpoint(ref) -> tuple[Path, FerModel, dict]:
    """A checkpoint path or shipped name -> (its path, the model in eval mode, its card): the one
    call that loading a model for inference makes here."""
    path = resolve_checkpoint(ref)
    model, card = load_checkpoint(path)
    return path, model, card


def check_canonical_face(card: dict, name: str = "model") -> None:
    """Refuse a landmark model whose card names another canonical face than ferlib's own: its
    normalised inputs would silently differ from those it was trained on."""
    want = card.get("canonical_face_sha256")
    if want is None:
        return
    have = canonical_face_sha256()
    if want != have:
        raise ModelFileError(f"{name}: trained with canonical face {str(want)[:12]}..., but "
                             f"ferlib/assets/canonical_face.npy is {have[:12]}...: retrain or restore the array")


def card_spec(card: dict) -> InputSpec:
    """The InputSpec stored in a (validated) card."""
    return InputSpec.from_dict(card["input"])


def card_tta_flip(card: dict) -> bool:
    """Whether the card's figures were measured with flip averaging (its training config's `tta_flip`):
    `predict`, Live, the Evaluate page and personal training read the model that way."""
    return bool(card.get("training", {}).get("config", {}).get("tta_flip", False))


__all__ = ["FORMAT", "VERSION", "card_spec", "card_tta_flip", "check_canonical_face", "checkpoint_paths",
           "existing_checkpoint", "load_checkpoint",
           "make_card", "read_checkpoint", "save_checkpoint", "base_of", "WEIGHT_BOUND_KEYS"]
