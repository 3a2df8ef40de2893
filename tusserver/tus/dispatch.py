"""Routing of tus requests: one dispatcher for the creation endpoint and one for upload URLs.

A hand-written dispatcher rather than Starlette routes, because the tus paths need exact
control: ``/files`` and ``/files/`` both create without a redirect, HEAD goes to the tus
handler and never to an implicit GET route, and a 405 carries the right ``Allow``
(docs/protocol.md, "Routing and 405"). Everything else falls through to the wrapped app
(catalog, health, ...).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.core.uploads import UploadService
from tusserver.edge.responses import error_response
from tusserver.runtime import runtime_of
from tusserver.security.principal import principal_of
from tusserver.state.base import state_unavailable
from tusserver.tus.handlers.delete import handle_delete
from tusserver.tus.handlers.get import handle_get
from tusserver.tus.handlers.head import handle_head
from tusserver.tus.handlers.options import handle_options
from tusserver.tus.handlers.patch import handle_patch
from tusserver.tus.handlers.post import handle_post

log = logging.getLogger("tusserver.http")


class TusDispatch:
    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self.base_path = base_path  # "/files/"
        self.collection_paths = {base_path, base_path.rstrip("/")}
        self.collection_allow = "OPTIONS, POST"

    @staticmethod
    def upload_allow(service: UploadService) -> str:
        methods = ["OPTIONS", "HEAD", "PATCH"]
        if service.ctx.composer.reader is not None:
            methods.append("GET")
        if service.features.termination:
            methods.append("DELETE")
        return ", ".join(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.collection_paths:
            upload_id = None
        elif path.startswith(self.base_path):
            upload_id = path[len(self.base_path) :]
        else:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        method: str = scope["method"]
        try:
            # The upload service of the runtime the app's lifespan opened.
            service = runtime_of(request).service
            if service.shutting_down and method != "OPTIONS":
                # A request that slipped in on a kept-alive connection after SIGTERM.
                raise errors.ShuttingDown(headers={"Connection": "close", "Retry-After": "1"})
            response = await self._route(service, request, method, upload_id)
        except errors.TusError as error:
            response = error_response(error, method=method)
        except state_unavailable() as exc:
            log.warning(
                "request.state_unavailable",
                extra={"path": path, "method": method, "error": type(exc).__name__},
            )
            response = error_response(errors.StorageUnavailable(), method=method)
        except Exception as exc:
            full = errors.storage_full(exc)
            if full is not None:
                # The disk, a quota or the database is full: a retryable 507, not a 500.
                log.warning(
                    "request.storage_full",
                    extra={"path": path, "method": method, "error": type(exc).__name__},
                )
                response = error_response(full, method=method)
            else:
                # Rendered here, inside the CORS middleware, so even a 500 reaches browser code as a
                # real status instead of an opaque network error (docs/protocol.md, "CORS").
                log.exception("request.failed", extra={"path": path, "method": method})
                response = error_response(errors.TusError(), method=method)
        await response(scope, receive, send)

    async def _route(
        self, service: UploadService, request: Request, method: str, upload_id: str | None
    ) -> Response:
        allow = self.upload_allow(service)
        if upload_id is None:
            if method == "POST":
                return await handle_post(service, request)
            if method == "OPTIONS":
                return await handle_options(service)
            raise errors.MethodNotAllowed(headers={"Allow": self.collection_allow})
        # Another user's upload answers exactly like a missing one (404): no existence leak.
        owner = principal_of(request).owner_filter
        if method == "OPTIONS":
            # Discovery works on any upload URL, known or not (docs/protocol.md, "Discovery").
            return await handle_options(service)
        if method == "HEAD":
            return await handle_head(service, upload_id, owner=owner)
        if method == "PATCH":
            return await handle_patch(service, request, upload_id)
        if method == "GET" and service.ctx.composer.reader is not None:
            info = await service.get(upload_id, owner=owner)
            return await handle_get(request, service.ctx, info)
        if method == "DELETE" and service.features.termination:
            return await handle_delete(service, upload_id, owner=owner)
        raise errors.MethodNotAllowed(headers={"Allow": allow})
