"""The JSON API's plumbing: one error shape, bounded JSON bodies, validation, method routing.

Errors reuse the ``TusError`` family (stable ``ERR_*`` codes) but render as
``{"error": {"code", "message", "details"?}}``. An unexpected exception becomes a 500 with a
fixed message: exception text can carry SQL, paths or secrets and never reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from tusserver import errors
from tusserver.runtime import settings_of
from tusserver.security import safejson

log = logging.getLogger("tusserver.api")

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]
# User data and per-user answers: never cached by a browser or a shared proxy.
NO_STORE = {"Cache-Control": "no-store"}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(data, status_code=status, headers={**NO_STORE, **(headers or {})})


def json_error(error: errors.TusError, details: Any = None) -> Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if details is not None:
        body["details"] = details
    return JSONResponse(
        {"error": body}, status_code=error.status, headers={**NO_STORE, **error.headers}
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """Starlette's answer for a path no route matches (a malformed upload id, say): JSON
    under ``/api/`` like every other API error, Starlette's plain text elsewhere."""
    if request.url.path.startswith("/api/"):
        return json_error(errors.NotFound("not found"))
    return PlainTextResponse("Not Found", status_code=404)


class ApiError(Exception):
    """A ``TusError`` plus structured details for the JSON body."""

    def __init__(self, error: errors.TusError, details: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.details = details


def validate(model: type[Model], data: Any) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(errors.ValidationFailed(), validation_details(exc)) from None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    # Location and reason only: echoing the rejected input back would reflect it verbatim.
    return [
        {"loc": [str(part) for part in item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in exc.errors()
    ]


async def read_json(request: Request, *, max_bytes: int = 64 * 1024) -> Any:
    """The JSON body, bounded in size and depth, with only storable text (``safejson``)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ApiError(errors.JsonRequired())
    declared = request.headers.get("content-length")
    # isascii: str.isdigit() alone also takes digits such as "²" that int() refuses.
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    ):
        raise ApiError(errors.PayloadTooLarge(f"the body may hold at most {max_bytes} bytes"))
    body = bytearray()
    try:
        async for chunk in _paced(request.stream(), _read_timeout(request)):
            body += chunk
            if len(body) > max_bytes:
                raise ApiError(
                    errors.PayloadTooLarge(f"the body may hold at most {max_bytes} bytes")
                )
    except ClientDisconnect:
        # A client cutting its body short is a client's problem, not a 500 with a traceback:
        # nobody reads this answer, but logs and metrics do.
        raise ApiError(errors.BodyIncomplete()) from None
    try:
        return safejson.loads(bytes(body))
    except errors.TusError as exc:
        raise ApiError(exc) from None


def _read_timeout(request: Request) -> float:
    settings = settings_of(request)
    return settings.read_timeout if settings is not None else 60.0


async def _paced(chunks: AsyncIterator[bytes], idle: float) -> AsyncIterator[bytes]:
    """``chunks``, each due within ``idle`` seconds (``TUS_READ_TIMEOUT``, as for upload
    bodies): a client dribbling a JSON body must not hold its connection and handler."""
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(errors.ReadTimeout()) from None
        yield chunk


class MethodRouter:
    """One ASGI app per path, dispatching on the method: a correct ``Allow`` on 405, and
    every error rendered as JSON."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        translate: Callable[[Exception], errors.TusError | None] | None = None,
    ) -> None:
        self._handlers = dict(handlers)
        if "GET" in self._handlers and "HEAD" not in self._handlers:
            self._handlers["HEAD"] = self._handlers["GET"]
        self._allow = ", ".join(sorted(self._handlers))
        self._translate = translate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        handler = self._handlers.get(request.method)
        if handler is None:
            error = errors.MethodNotAllowed(headers={"Allow": self._allow})
            response = json_error(error)
        else:
            response = await self._run(handler, request)
        await response(scope, receive, send)

    async def _run(self, handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_error(exc.error, exc.details)
        except errors.TusError as exc:
            return json_error(exc)
        except Exception as exc:
            # A full disk, quota or database first: the route's own translation would take
            # it for an outage (503) or a bug (500).
            translated: errors.TusError | None = errors.storage_full(exc)
            if translated is None and self._translate is not None:
                translated = self._translate(exc)
            if translated is not None:
                log.warning(
                    "api.backend_error",
                    extra={"path": request.url.path, "error": type(exc).__name__},
                )
                return json_error(translated)
            log.exception("api.internal_error", extra={"path": request.url.path})
            return json_error(errors.TusError())
