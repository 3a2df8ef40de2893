"""Pure ASGI middleware: CORS, the tus protocol envelope, and request ids.

This module owns everything that must hold for every request before any handler runs:

- ``CORSMiddleware`` answers preflights itself and puts CORS headers on every response, errors
  included. It must be the outermost layer (docs/protocol.md, "CORS"): an error without
  ``Access-Control-Allow-Origin`` reaches browser JS as a network error.
- ``TusProtocolMiddleware`` applies ``X-HTTP-Method-Override``
  (docs/protocol.md, "Method override"), refuses unsupported ``Tus-Resumable`` versions with 412
  before the body is read (docs/protocol.md, "Versioning and Tus-Resumable"), and stamps
  ``Tus-Resumable`` and ``nosniff`` on every tus response
  (docs/protocol.md, "Versioning and Tus-Resumable").
- ``RequestIdMiddleware`` gives every request an id for logs and the response.

Order: CORS outside TusProtocol (so its 412 carries CORS headers) and outside every handler.
RequestId may sit outside CORS, so that CORS's own 403 and preflights carry an id too.

They are plain ASGI callables rather than ``BaseHTTPMiddleware``, which runs the downstream app
in a separate task and relays every body chunk through a memory stream; these wrap every
PATCH. Headers are handled as raw ASGI lists (lowercase byte names) and rewritten only on the
``http.response.start`` message; body messages pass through untouched.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver import TUS_VERSION
from tusserver.edge.responses import error_response
from tusserver.errors import OriginNotAllowed, TusError, UnsupportedVersion
from tusserver.ops.logs import request_id_var

RawHeaders = list[tuple[bytes, bytes]]

# tusd's DefaultCorsConfig, plus what our extensions add: Upload-Checksum (docs/protocol.md, "CORS")
# and Idempotency-Key (the REST API). X-HTTP-Method-Override is in tusd's list
# (docs/protocol.md, "Method override" and "CORS").
DEFAULT_ALLOW_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Origin",
    "X-Requested-With",
    "X-Request-ID",
    "X-HTTP-Method-Override",
    "Content-Type",
    "Upload-Length",
    "Upload-Offset",
    "Tus-Resumable",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Incomplete",
    "Upload-Complete",
    "Upload-Draft-Interop-Version",
    "Upload-Checksum",
    "Idempotency-Key",
)

# What tus clients must read (docs/protocol.md, "CORS"), plus what downloads and ops need to be
# readable from JS (ranges, names, retry hints).
EXPOSE_HEADERS: tuple[str, ...] = (
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Upload-Limit",
    "ETag",
    "Content-Range",
    "Content-Disposition",
    "X-Request-ID",
    "Retry-After",
    "Idempotent-Replayed",
)

# PATCH and DELETE are not CORS-safelisted, so they must be listed.
# PUT: the signed part URLs of direct uploads on local storage (browsers PUT parts).
ALLOW_METHODS = "POST, HEAD, PATCH, OPTIONS, GET, DELETE, PUT"

# The CORS response headers this middleware owns; an inner layer's copies are replaced, never
# duplicated.
_CORS_OWNED = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-max-age",
    }
)

# RFC 9110 §5.6.2 token, for header names a preflight asks us to reflect (docs/protocol.md, "CORS").
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class CORSMiddleware:
    """CORS for browser clients (tus-js-client, Uppy): docs/protocol.md, "CORS".

    ``origins`` are exact origins, or ``"*"`` for any. The request's own ``Origin`` is always
    echoed, never ``*``, so credentials work (docs/protocol.md, "CORS").
    ``extra_preflight_headers(scope)`` lets the app add headers to preflights it never sees (e.g.
    ``Tus-Resumable`` on tus paths).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Sequence[str],
        allow_credentials: bool,
        max_age: int,
        extra_preflight_headers: Callable[[Scope], RawHeaders] | None = None,
    ) -> None:
        self.app = app
        self.allow_any = "*" in origins
        self.origins = frozenset(origins)
        self.extra_preflight_headers = extra_preflight_headers
        # Precomputed once: the actual-response path runs on every PATCH.
        self._common: RawHeaders = [
            (b"access-control-expose-headers", ", ".join(EXPOSE_HEADERS).encode("latin-1"))
        ]
        if allow_credentials:
            self._common.append((b"access-control-allow-credentials", b"true"))
        self._allow_headers = ", ".join(DEFAULT_ALLOW_HEADERS).encode("latin-1")
        self._allow_headers_lower = frozenset(
            name.lower().encode("latin-1") for name in DEFAULT_ALLOW_HEADERS
        )
        self._preflight_common: RawHeaders = [
            (b"access-control-allow-methods", ALLOW_METHODS.encode("latin-1")),
            (b"access-control-max-age", str(max_age).encode("latin-1")),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        origin, preflight, requested = _cors_headers(scope["headers"])
        if origin is None:
            # Not a cross-origin browser request: nothing to add, nothing to refuse.
            await self.app(scope, receive, send)
            return

        method = scope["method"]
        if not self.allow_any and origin.decode("latin-1") not in self.origins:
            # 403 and no CORS headers, so the browser reports the refusal.
            await _own_error(OriginNotAllowed(), method)(scope, receive, send)
            return

        if method == "OPTIONS" and preflight:
            await self._preflight(scope, send, origin, requested)
            return

        # A JS-initiated tus OPTIONS also gets the preflight set, as tusd sends it.
        extra = self._preflight_set(()) if method == "OPTIONS" else []
        started = False

        async def send_with_cors(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = _with_vary_origin(
                    [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _CORS_OWNED]
                )
                headers.append((b"access-control-allow-origin", origin))
                headers.extend(self._common)
                headers.extend(extra)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        except Exception:
            # If nothing answered yet (an exception escaped every inner layer), answer
            # a 500 that the browser can read, then re-raise so the server (or Starlette's
            # ServerErrorMiddleware, which then sees the response as started) logs it. If an
            # inner layer already answered through send_with_cors, this only re-raises.
            if not started:
                await _own_error(TusError(), method)(scope, receive, send_with_cors)
            raise

    async def _preflight(
        self, scope: Scope, send: Send, origin: bytes, requested: list[bytes]
    ) -> None:
        """Answer a preflight for any path, known or not, with no auth.

        See (docs/protocol.md, "CORS").
        """
        headers: RawHeaders = [
            (b"access-control-allow-origin", origin),
            (b"vary", b"Origin"),
            *self._common,
            *self._preflight_set(requested),
        ]
        if self.extra_preflight_headers is not None:
            headers.extend(self.extra_preflight_headers(scope))
        headers.append((b"x-content-type-options", b"nosniff"))  # on every response
        headers.append((b"content-length", b"0"))
        # 200, not 204: some old browsers (Presto) reject a 204 preflight
        # (docs/protocol.md, "Discovery").
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _preflight_set(self, requested: Iterable[bytes]) -> RawHeaders:
        allow_headers = self._allow_headers
        extra = _reflectable(requested, self._allow_headers_lower)
        if extra:
            # App-specific headers (tus-js-client/Uppy `headers` option) are reflected.
            allow_headers += b", " + b", ".join(extra)
        return [(b"access-control-allow-headers", allow_headers), *self._preflight_common]


def _cors_headers(headers: RawHeaders) -> tuple[bytes | None, bool, list[bytes]]:
    """The request's first ``Origin``, whether it is a preflight (it names a method), and
    the ``Access-Control-Request-Headers`` values it sent."""
    origin: bytes | None = None
    preflight = False
    requested: list[bytes] = []
    for name, value in headers:
        if name == b"origin":
            if origin is None:
                origin = value
        elif name == b"access-control-request-method":
            preflight = True
        elif name == b"access-control-request-headers":
            requested.append(value)
    return origin, preflight, requested


def _own_error(error: TusError, method: str) -> Response:
    """An error this middleware answers itself, outside the layer that adds nosniff."""
    response = error_response(error, method=method)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _reflectable(requested: Iterable[bytes], known: frozenset[bytes]) -> list[bytes]:
    """The requested header names not already allowed; anything not a token is dropped."""
    extra: list[bytes] = []
    seen = set(known)
    for value in requested:
        for part in value.split(b","):
            name = part.strip().lower()
            if name and name not in seen and _TOKEN.fullmatch(name):
                seen.add(name)
                extra.append(name)
    return extra


def _with_vary_origin(headers: RawHeaders) -> RawHeaders:
    """``headers`` with ``Origin`` in one ``Vary`` header, merged with any the app set."""
    varies = [value for name, value in headers if name.lower() == b"vary"]
    if not varies:
        headers.append((b"vary", b"Origin"))
        return headers
    tokens = [t.strip() for v in varies for t in v.split(b",") if t.strip()]
    if any(t == b"*" or t.lower() == b"origin" for t in tokens):
        return headers
    merged = b", ".join([*tokens, b"Origin"])
    headers = [(name, value) for name, value in headers if name.lower() != b"vary"]
    headers.append((b"vary", merged))
    return headers


class TusProtocolMiddleware:
    """Method override, the version check and the protocol headers, for tus paths only.

    A tus path is ``base_path``, ``base_path`` without its trailing slash, or anything below
    it. Other paths (REST API, health, downloads elsewhere) pass through untouched.
    """

    _OVERRIDABLE = frozenset({"PATCH", "DELETE", "HEAD", "GET", "POST"})

    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self._base = base_path.rstrip("/")
        self._prefix = self._base + "/"

    def _is_tus_path(self, path: str) -> bool:
        return path == self._base or path.startswith(self._prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_tus_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        override: bytes | None = None
        versions: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-http-method-override":
                if override is None:
                    override = value
            elif name == b"tus-resumable":
                versions.append(value)

        method: str = scope["method"]
        if override is not None and method == "POST":
            # Only a real POST may be rewritten: overriding a safe method into a destructive
            # one, e.g. GET -> DELETE, would be a CSRF gadget (docs/protocol.md, "Method override").
            wanted = override.decode("latin-1").strip().upper()
            if wanted in self._OVERRIDABLE:
                method = wanted
                scope = {**scope, "method": wanted}

        async def send_with_tus(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _with_tus_headers(message.get("headers", ()))}
            await send(message)

        if not _version_ok(method, versions):
            # A 412 means the request is not processed, so neither the app nor
            # receive() is called; no body is read (and no 100 Continue is sent).
            response = error_response(UnsupportedVersion(), method=method)
            await response(scope, receive, send_with_tus)
            return
        await self.app(scope, receive, send_with_tus)


def _version_ok(method: str, versions: list[bytes]) -> bool:
    # OPTIONS is discovery and must never 412 (docs/protocol.md, "Discovery"); GET is a download a
    # browser may visit.
    if method in ("OPTIONS", "GET"):
        return True
    # HEAD without the header is served (tusd exempts it); with a bad one it is a 412
    # (docs/protocol.md, "HEAD without Tus-Resumable").
    if not versions:
        return method == "HEAD"
    # Exact match after trimming; two header lines count as a list, which is a 412.
    return len(versions) == 1 and versions[0].strip() == _TUS_VERSION


_TUS_VERSION = TUS_VERSION.encode("latin-1")
_TUS_HEADERS: RawHeaders = [
    (b"tus-resumable", _TUS_VERSION),
    (b"x-content-type-options", b"nosniff"),
]


def _with_tus_headers(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """``headers`` plus Tus-Resumable and nosniff, unless already present.

    See (docs/protocol.md, "Versioning and Tus-Resumable").
    """
    out = list(headers)
    present = {name.lower() for name, _ in out}
    out.extend(h for h in _TUS_HEADERS if h[0] not in present)
    return out


# Reused from a client or proxy only when it cannot smuggle anything into logs or headers.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


class RequestIdMiddleware:
    """Puts a request id in ``scope["state"]["request_id"]`` and ``X-Request-ID``.

    A well-formed incoming ``X-Request-ID`` (from a proxy or tus-js-client) is kept so logs
    on both sides correlate; anything else is replaced by a fresh one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value
                break
        if request_id is None:
            request_id = uuid.uuid4().hex.encode("ascii")
        scope.setdefault("state", {})["request_id"] = request_id.decode("ascii")
        header = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if all(name.lower() != b"x-request-id" for name, _ in headers):
                    headers.append(header)
                    message = {**message, "headers": headers}
            await send(message)

        token = request_id_var.set(request_id.decode("ascii"))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
