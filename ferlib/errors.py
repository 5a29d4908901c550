"""Errors that ferlib raises on bad input. Every message says what was wrong and with what."""
from __future__ import annotations


class FerError(Exception):
    """Base class of every ferlib error."""


class InputError(FerError, ValueError):
    """An input (image, video, csv, zip, name) that cannot be used: corrupt, truncated, empty, wrong type."""


class ModelFileError(FerError, ValueError):
    """A model file that is not a ferlib checkpoint, is from an incompatible version, or was tampered with."""


class StorageError(FerError, OSError):
    """Writing to the data folder failed (full disk, permissions); nothing already saved was lost."""
