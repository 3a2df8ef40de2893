"""The finished object's Content-Type and user metadata, derived from the tus metadata."""

from __future__ import annotations

import re
import urllib.parse

_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_META_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# S3 caps user metadata at 2 KiB per object (keys plus values) and a request's headers at
# 8 KiB; each key is sent twice (its x-amz-meta- header, and SigV4's SignedHeaders list).
# What does not fit is left out, not an error: the full metadata is in the state store (and
# the .info object), the object's own metadata is a convenience. The pair count keeps the
# request well inside servers that count header lines (Python's http.server, under moto,
# refuses more than 100 with a 431) and, with the budget, inside the 8 KiB.
_META_BUDGET = 2000
_META_MAX_PAIRS = 32
# Kept first, so the object still says what it is when other keys are left out.
_META_FIRST = ("filename", "filetype")


def content_type(metadata: dict[str, str | None]) -> str:
    """The object's Content-Type: the client's ``filetype`` if it looks like one."""
    value = metadata.get("filetype")
    if value and _MIME.fullmatch(value):
        return value
    return "application/octet-stream"


def user_metadata(metadata: dict[str, str | None]) -> dict[str, str]:
    """tus metadata as S3 user metadata: ASCII keys, percent-encoded values, at most
    ``_META_MAX_PAIRS`` pairs within ``_META_BUDGET`` bytes; ``filename``/``filetype`` first."""
    out: dict[str, str] = {}
    used = 0
    ordered = sorted(metadata.items(), key=lambda kv: (kv[0] not in _META_FIRST, kv[0]))
    for raw_key, raw_value in ordered:
        if len(out) == _META_MAX_PAIRS:
            break
        key = raw_key.lower()
        if _META_KEY.fullmatch(key) is None or key in out:
            continue
        value = urllib.parse.quote(raw_value or "", safe="")
        if used + len(key) + len(value) > _META_BUDGET:
            continue
        used += len(key) + len(value)
        out[key] = value
    return out
