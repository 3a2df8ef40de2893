"""Headers that may appear once: a request repeating one with another value is a 400.

Handlers read headers with ``Headers.get``, which takes the first line, while a proxy, a
cache or our own idempotency fingerprint (built from a ``dict``, so the last line) may read
another one: ``Upload-Length: 5`` then ``Upload-Length: 6`` meant two different requests to
two readers. Repeats with the same value (after trimming optional whitespace) are harmless
and accepted; ``Tus-Resumable`` repeated is already a 412 (the version check treats two lines
as a list). Tus paths answer in tus' text shape, other paths in the JSON API's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.edge.jsonapi import json_error
from tusserver.edge.responses import error_response

SINGLETONS = frozenset(
    {
        b"upload-length",
        b"upload-offset",
        b"upload-metadata",
        b"upload-concat",
        b"upload-checksum",
        b"upload-defer-length",
        b"x-http-method-override",
        b"idempotency-key",
        b"content-type",
    }
)


def conflicting(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first singleton header sent twice with different values, or None."""
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name not in SINGLETONS:
            continue
        value = bytes(value).strip(b" \t")
        first = seen.setdefault(name, value)
        if first != value:
            return name.decode("latin-1")
    return None


class SingletonHeaders:
    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self._base = base_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = conflicting(scope["headers"])
        if name is None:
            await self.app(scope, receive, send)
            return
        error = errors.DuplicateHeader(f"{name} was sent twice with different values")
        path: str = scope["path"]
        if path == self._base or path.startswith(self._base + "/"):
            response = error_response(error, method=scope["method"])
        else:
            response = json_error(error)
        await response(scope, receive, send)
