"""``Idempotency-Key`` on HTTP routes: a decorator for JSON handlers and an ASGI wrapper for
the tus creation endpoint. The rule itself is ``tusserver.security.idempotency.Idempotency.run``.

JSON routes (``/api/v1/uploads/init``, and any create route that wants it)::

    async def create(request: Request, body: Any) -> Response: ...
    MethodRouter({"POST": idempotent_json(create)})

The decorator reads the JSON body itself (bounded, 415/413/422 as ``read_json``), so the
fingerprint is method, path and the body's canonical JSON; without the header the handler
simply runs.

The tus ``POST`` (``IdempotentCreation``): the fingerprint is method, path and the headers
that define the upload (``Upload-Length``, ``Upload-Defer-Length``, ``Upload-Metadata``,
``Upload-Concat``). A body (creation-with-upload) is data, not intent: a replay answers at
once from the record and never reads or stores the repeated body, so its bytes cannot land
twice; the replayed ``Upload-Offset`` says what the first request stored, and the client
resumes from there with ``HEAD``/``PATCH`` as usual.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver import errors
from tusserver.edge.jsonapi import Handler, read_json
from tusserver.edge.responses import error_response
from tusserver.runtime import runtime_of
from tusserver.security.idempotency import (
    HEADER,
    Idempotency,
    StoredResponse,
    fingerprint,
    parse_key,
)
from tusserver.security.principal import principal_of

JsonHandler = Callable[[Request, Any], Awaitable[Response]]
# The headers that say what upload a tus POST asks for.
TUS_CREATION_HEADERS = (
    b"upload-length",
    b"upload-defer-length",
    b"upload-metadata",
    b"upload-concat",
)


def idempotency_of(connection: HTTPConnection) -> Idempotency:
    """The runtime's ``Idempotency`` (records in-process, or shared through Redis)."""
    return runtime_of(connection).idempotency


def canonical_json(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def idempotent_json(handler: JsonHandler, *, max_bytes: int = 64 * 1024) -> Handler:
    """Wrap a JSON handler ``(request, body) -> Response`` with ``Idempotency-Key``."""

    async def run(request: Request) -> Response:
        body = await read_json(request, max_bytes=max_bytes)
        raw = request.headers.get(HEADER)
        if raw is None:
            return await handler(request, body)
        key = parse_key(raw)
        print_ = fingerprint(request.method, request.url.path, [canonical_json(body)])

        async def produce() -> StoredResponse:
            return StoredResponse.of(await handler(request, body))

        stored = await idempotency_of(request).run(
            key, principal_of(request).user_id, print_, produce
        )
        return stored.to_response()

    return run


class _Capture:
    """An ASGI ``send`` that buffers a (small) response instead of sending it."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def response(self) -> StoredResponse:
        return StoredResponse(self.status, tuple(self.headers), bytes(self.body))


class IdempotentCreation:
    """Raw ASGI, right outside the tus dispatcher: ``Idempotency-Key`` on ``POST`` to the
    creation endpoint (``paths``); every other request passes through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        idempotency: Callable[[Scope], Idempotency | None],
        paths: Collection[str],
    ) -> None:
        self.app = app
        # Where this request's records are (None: not ready, the dispatcher answers 503).
        self.idempotency = idempotency
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw = headers.get(HEADER.lower().encode())
        idempotency = self.idempotency(scope) if raw is not None else None
        if raw is None or idempotency is None:
            await self.app(scope, receive, send)
            return
        response: Response
        try:
            key = parse_key(bytes(raw).decode("latin-1"))
            print_ = fingerprint(
                "POST",
                scope["path"].rstrip("/"),  # /files and /files/ are the same endpoint
                [_header(headers, name) for name in TUS_CREATION_HEADERS],
            )

            async def produce() -> StoredResponse:
                capture = _Capture()
                await self.app(scope, receive, capture.send)
                return capture.response()

            user = principal_of(Request(scope)).user_id
            stored = await idempotency.run(key, user, print_, produce)
            response = stored.to_response()
        except errors.TusError as error:
            response = error_response(error, method="POST")
        await response(scope, receive, send)


def _header(headers: dict[bytes, bytes], name: bytes) -> bytes | None:
    value = headers.get(name)
    return None if value is None else bytes(value).strip(b" \t")
