"""The one class table of the project.

Every dataset, model card and UI goes through this module: class names are the lower-case
canonical names below, in this order, and every source's own names and numeric codes are
mapped here explicitly.
"""
from __future__ import annotations

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")
"""Canonical classes, in canonical order (index = canonical id)."""

FER7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
"""The seven FER2013 classes in canonical order: the default class list of shipped models."""

# Source names -> canonical name. Keys are lower-case; lookups lower-case and strip their input.
NAME_ALIASES: dict[str, str] = {
    "angry": "angry", "anger": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "afraid": "fear", "fearful": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "neutral": "neutral", "calm": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "contempt": "contempt",
}

# Numeric label codes of each source -> canonical name.
FER2013_CODES: dict[int, str] = {
    0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral",
}
AFFECTNET_CODES: dict[int, str] = {
    0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "angry", 7: "contempt",
}
CKPLUS_CODES: dict[int, str] = {
    0: "neutral", 1: "angry", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy", 6: "sad", 7: "surprise",
}
SOURCE_CODES: dict[str, dict[int, str]] = {
    "fer2013": FER2013_CODES, "affectnet": AFFECTNET_CODES, "ckplus": CKPLUS_CODES,
}


class UnknownClassError(ValueError):
    """A class name or code that the table does not know."""


def canonical(name: str) -> str:
    """Map any known source class name to its canonical name (case-insensitive)."""
    key = str(name).strip().lower()
    try:
        return NAME_ALIASES[key]
    except KeyError:
        raise UnknownClassError(
            f"unknown emotion class {name!r}; known names: {sorted(NAME_ALIASES)}") from None


def from_code(source: str, code: int) -> str:
    """Map a numeric label of a named source ('fer2013', 'affectnet', 'ckplus') to a canonical name."""
    try:
        table = SOURCE_CODES[source]
    except KeyError:
        raise UnknownClassError(f"unknown label source {source!r}; known: {sorted(SOURCE_CODES)}") from None
    try:
        return table[int(code)]
    except (KeyError, ValueError, TypeError):
        raise UnknownClassError(f"{source} has no class code {code!r}; known codes: {sorted(table)}") from None


def index_of(name: str, classes: tuple[str, ...] | list[str] = FER7) -> int:
    """Index of a (possibly aliased) class name within a model's class list."""
    c = canonical(name)
    try:
        return list(classes).index(c)
    except ValueError:
        raise UnknownClassError(f"class {c!r} is not among this model's classes {list(classes)}") from None
