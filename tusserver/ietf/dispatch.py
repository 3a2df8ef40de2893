"""Routing of the draft's requests on the tus endpoint: same ``/files/`` collection, same
upload URLs (docs/protocol.md, "IETF draft: detection").

An ASGI layer in front of the tus dispatcher: a request ``detect`` calls the draft's is served
here, in the draft's shape (problem details, its header names); everything else, and every
GET (a download serves both protocols), passes through untouched.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.core.uploads import UploadService
from tusserver.ietf.append import handle_append
from tusserver.ietf.creation import handle_creation
from tusserver.ietf.detect import is_draft_request
from tusserver.ietf.limits import limit_header
from tusserver.ietf.problems import problem_response
from tusserver.ietf.resource import handle_cancel, handle_offset, handle_options
from tusserver.ietf.versions import InteropRules, rules_for
from tusserver.ops.metrics import StatusNotingSend
from tusserver.runtime import running, runtime_of
from tusserver.security.principal import principal_of
from tusserver.state.base import state_unavailable

log = logging.getLogger("tusserver.http")

UNSUPPORTED_LABEL = "ietf-unsupported"


class IetfDispatch:
    def __init__(self, app: ASGIApp, *, base_path: str) -> None:
        self.app = app
        self.base_path = base_path  # "/files/"
        self.collection_paths = {base_path, base_path.rstrip("/")}

    def _upload_id(self, path: str) -> str | None:
        return None if path in self.collection_paths else path[len(self.base_path) :]

    def _serves(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] == "GET":
            return False
        path: str = scope["path"]
        on_endpoint = path in self.collection_paths or path.startswith(self.base_path)
        return on_endpoint and is_draft_request(scope["headers"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._serves(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        method: str = scope["method"]
        rules: InteropRules | None = None
        noted = StatusNotingSend(send)
        try:
            rules = rules_for(request.headers)
            response = await self._answer(request, rules, method, noted)
        except errors.TusError as error:
            # Rules unknown (an unsupported version): answered without the draft's fields.
            response = problem_response(error, rules, method=method, complete=None)
        try:
            await response(scope, receive, noted)
        finally:
            self._note(scope, rules, method, noted.status)

    async def _answer(
        self, request: Request, rules: InteropRules, method: str, send: Send
    ) -> Response:
        """The handler's response, or the problem an error becomes (never an unhandled 500)."""
        path: str = request.scope["path"]
        # An append's (and a creation's) errors say "not complete"; the draft asks for the
        # flag there so a client can tell them from the processed representation's answer.
        flag = False if method in ("PATCH", "POST") else None
        service: UploadService | None = None
        try:
            service = runtime_of(request).service
            if service.shutting_down and method != "OPTIONS":
                raise errors.ShuttingDown(headers={"Connection": "close", "Retry-After": "1"})
            return await self._route(service, request, rules, method, send)
        except errors.TusError as error:
            if error.status == 413 and service is not None:
                # The draft asks a 413 from its limits to say what they are.
                principal = principal_of(request)
                error.headers.update(limit_header(service, rules, None, principal))
            return problem_response(error, rules, method=method, complete=flag)
        except state_unavailable() as exc:
            log.warning(
                "request.state_unavailable",
                extra={"path": path, "method": method, "error": type(exc).__name__},
            )
            return problem_response(errors.StorageUnavailable(), rules, method=method)
        except Exception as exc:
            full = errors.storage_full(exc)
            if full is None:
                log.exception("request.failed", extra={"path": path, "method": method})
            return problem_response(full or errors.TusError(), rules, method=method)

    async def _route(
        self, service: UploadService, request: Request, rules: InteropRules, method: str, send: Send
    ) -> Response:
        upload_id = self._upload_id(request.scope["path"])
        principal = principal_of(request)
        if method == "OPTIONS":
            return handle_options(service, rules, principal)
        if upload_id is None:
            if method == "POST":
                return await handle_creation(service, request, rules, send)
            raise errors.MethodNotAllowed(headers={"Allow": "OPTIONS, POST"})
        owner = principal.owner_filter
        if method == "HEAD":
            return await handle_offset(service, rules, upload_id, principal=principal)
        if method == "PATCH":
            return await handle_append(service, request, rules, upload_id)
        if method == "DELETE" and service.features.termination:
            return await handle_cancel(service, rules, upload_id, owner=owner)
        allow = "OPTIONS, HEAD, PATCH, GET" + (", DELETE" if service.features.termination else "")
        raise errors.MethodNotAllowed(headers={"Allow": allow})

    @staticmethod
    def _note(scope: Scope, rules: InteropRules | None, method: str, status: int) -> None:
        """Metrics and logs say which protocol and interop version a request spoke."""
        label = rules.label if rules is not None else UNSUPPORTED_LABEL
        runtime = running(scope)
        if runtime is not None:
            runtime.service.ctx.metrics.protocol_request(label, method, status)
        log.info(
            "request.draft",
            extra={"protocol": label, "method": method, "status": status, "path": scope["path"]},
        )
