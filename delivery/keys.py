"""Storage keys from clients: normalized, confined to allowed prefixes and extensions.

A key names an object in our storage; a client that can steer it anywhere (``..``, an
absolute path, a backslash, a NUL, or those same things percent-encoded, once or twice) could
read what is not theirs. Such keys are refused outright, never "cleaned" into something else.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from urllib.parse import unquote

from tusserver import errors

MAX_KEY = 1024
# Printable ASCII minus the characters with a meaning in paths, URLs or shells.
_ALLOWED = re.compile(r"[A-Za-z0-9._\-/+=@,]+")


InvalidKey = errors.InvalidKey


def normalize_key(
    raw: str, *, prefixes: Sequence[str] = ("",), extensions: Sequence[str] = ()
) -> str:
    """The key itself when it is safe and allowed, else ``InvalidKey`` (400)."""
    if not raw or len(raw) > MAX_KEY:
        raise InvalidKey("the storage key is empty or too long")
    decoded = raw
    # Decode until stable (bounded): %252e%252e is ".." after two rounds.
    for _ in range(3):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    if decoded != raw:
        raise InvalidKey("percent-encoded storage keys are not accepted")
    if "\\" in raw or "\x00" in raw or "//" in raw or raw.startswith("/"):
        raise InvalidKey()
    if _ALLOWED.fullmatch(raw) is None:
        raise InvalidKey("the storage key has characters that are not allowed")
    parts = raw.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey()
    if posixpath.normpath(raw) != raw:
        raise InvalidKey()
    if not any(raw.startswith(prefix) for prefix in prefixes):
        raise InvalidKey("the storage key is outside the allowed prefixes")
    if extensions and not raw.lower().endswith(tuple(e.lower() for e in extensions)):
        raise InvalidKey("the storage key's extension is not allowed")
    return raw
