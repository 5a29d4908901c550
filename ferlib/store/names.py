"""Session and model names typed by a user: which are safe, and their filesystem slug."""
from __future__ import annotations

import re

from ferlib.errors import InputError

NAME_PATTERN = re.compile(r"[A-Za-z0-9 _.\-]{1,64}")


def validate_name(name: object, what: str = "name") -> str:
    """Return `name` if it is a safe session/model name, else raise InputError saying why."""
    if not isinstance(name, str):
        raise InputError(f"{what} must be text, got {type(name).__name__}")
    if not name.strip():
        raise InputError(f"{what} {name!r} is empty")
    if len(name) > 64:
        raise InputError(f"{what} {name[:20]!r}... is {len(name)} characters long; at most 64 are allowed")
    if any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InputError(f"{what} {name!r} contains a path separator or control character")
    if not NAME_PATTERN.fullmatch(name) or name != name.strip() or set(name) <= {"."}:
        raise InputError(f"{what} {name!r} may only use letters, digits, space, '-', '_' and '.', "
                         "without leading/trailing spaces")
    return name


def slug(name: str) -> str:
    """Filesystem-safe lower-case slug of a validated name (never used alone as a unique path)."""
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "x"
