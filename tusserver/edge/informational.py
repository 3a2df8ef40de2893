"""The ``http.response.informational`` ASGI extension: what an app may send, and the helper
that sends it.

ASGI has no standard way to answer ``1xx`` before the final response (only the narrower
``http.response.early_hint``, for ``103`` with ``Link``). Our uvicorn protocol classes
(``httpproto``) offer one: every HTTP scope they make carries
``scope["extensions"]["http.response.informational"] = {}``, and the app may then send, any
number of times before ``http.response.start``::

    {"type": "http.response.informational", "status": 104, "headers": [(b"location", b"...")]}

which the server writes to the client at once as ``HTTP/1.1 104 <reason>`` plus the headers.
After the response started, or to an HTTP/1.0 client (which cannot parse a 1xx), the message is
dropped without an error. A status outside 100-199, ``101`` (a protocol switch is not an
informational answer), header names or values that are not valid HTTP (CR or LF in a value:
response splitting) and ``Content-Length`` or ``Transfer-Encoding`` (a 1xx has no body) raise
``InformationalError`` in the app, as uvicorn raises for a bad final header.

Servers without the extension (stock uvicorn, hypercorn, granian: an embedding host's server)
would refuse the message as out of order, so callers go through ``send_informational``, which
checks the scope and returns ``False`` there (docs/protocol.md, "Informational responses").

This module owns the contract (names, checks, the wire form); ``informational_wire`` holds the
protocol side that writes it.
"""

from __future__ import annotations

import http
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

EXTENSION = "http.response.informational"
MESSAGE_TYPE = EXTENSION

# Reason phrases Python's http module does not know yet.
_PHRASES = {104: "Upload Resumption Supported"}  # draft-ietf-httpbis-resumable-upload
# RFC 9110 "token" for names; values may hold anything but controls other than HTAB.
_NAME_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE_BAD_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})

Headers = list[tuple[bytes, bytes]]


class InformationalError(RuntimeError):
    """An informational message the server will not write (bad status or header)."""


def supported(scope: Mapping[str, Any]) -> bool:
    """Whether the server behind ``scope`` takes ``http.response.informational`` messages."""
    extensions = scope.get("extensions") or {}
    return EXTENSION in extensions


def offer(scope: MutableMapping[str, Any]) -> None:
    """Mark ``scope`` as served by a server with the extension (the protocol calls this)."""
    extensions = scope.get("extensions")
    if extensions is None:
        extensions = scope["extensions"] = {}
    extensions[EXTENSION] = {}


def reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return _PHRASES.get(status, "").encode()


def checked(message: Mapping[str, Any]) -> tuple[int, Headers]:
    """The status and headers of an informational ``message``, or ``InformationalError``."""
    status = message.get("status")
    if type(status) is not int or not 100 <= status <= 199 or status == 101:
        raise InformationalError(
            f"informational status must be an int in 100-199 other than 101, not {status!r}"
        )
    return status, [_checked_header(pair) for pair in message.get("headers", ())]


def _checked_header(pair: Any) -> tuple[bytes, bytes]:
    try:
        name, value = pair
    except (TypeError, ValueError):
        message = f"an informational header is a (name, value) pair, not {pair!r}"
        raise InformationalError(message) from None
    if not isinstance(name, bytes) or not isinstance(value, bytes):
        raise InformationalError("informational header names and values must be bytes")
    if not _NAME_RE.match(name):
        raise InformationalError(f"invalid informational header name {name!r}")
    if _VALUE_BAD_RE.search(value):
        raise InformationalError(f"invalid informational header value for {name!r}")
    name = name.lower()
    if name in _FRAMING:
        # RFC 9110, section 8.6 and RFC 9112, section 6.1: a 1xx has no content to frame.
        raise InformationalError(f"{name!r} is not allowed in an informational response")
    return name, value


def encode(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The HTTP/1.1 wire form of an informational response (already ``checked``)."""
    lines = [b"HTTP/1.1 %d %b" % (status, reason(status))]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def send_informational(
    scope: Mapping[str, Any], send: Send, status: int, headers: Iterable[tuple[bytes, bytes]]
) -> bool:
    """Send a ``1xx`` if the server can; ``False`` when it cannot (no extension, HTTP/1.0).

    ``True`` means the server took the message; it still drops it silently should the
    response have started meanwhile. Bad input raises ``InformationalError`` either way, so
    a mistake shows under every server.
    """
    message = {"type": MESSAGE_TYPE, "status": status, "headers": list(headers)}
    checked(message)
    if not supported(scope) or scope.get("http_version") == "1.0":
        return False
    await send(message)
    return True
