"""Embedding: tusserver as an ASGI app mounted inside another application.

Owns the one entry point a host application (Starlette, FastAPI, Litestar, any ASGI
framework) uses: ``create_mount`` returns a ``TusMount``, the app ``create_app`` builds (the
same composition root as ``tusserver serve``), plus

- the mount prefix: the host mounts it under any path (``/uploads``) and every URL it hands
  out carries that prefix (tus ``Location``, the REST ``upload_url``, signed download links,
  thumbnails, the demo page's assets), read from the request (``tusserver.edge.mount``), never
  repeated in the settings; ``TUS_BASE_PATH`` stays relative to the mount (``/files/``);
- its lifespan as an async context manager the host enters in its own lifespan (frameworks
  do not forward lifespan events to mounted apps); a lifespan scope that does reach the mount
  is served too;
- extension points as plain async functions: ``authenticate`` maps the host's request to our
  ``Principal`` (the host's own auth in place of our JWTs), ``pre_create`` screens every new
  upload, ``post_finish`` hears every completed one.

See docs/embedding.md and examples/.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from tusserver import errors
from tusserver.app import create_app
from tusserver.core.listener import UploadListener
from tusserver.edge import mount
from tusserver.hooks.callables import (
    NewUpload,
    PostFinishFn,
    PostFinishListener,
    PreCreateFn,
)
from tusserver.models import UploadInfo
from tusserver.runtime import Runtime, TusApp
from tusserver.security.host_auth import AuthenticateFn, HostAuthenticator
from tusserver.security.principal import Principal
from tusserver.settings import Settings

__all__ = [
    "AuthenticateFn",
    "NewUpload",
    "PostFinishFn",
    "PreCreateFn",
    "Principal",
    "Settings",
    "TusMount",
    "UploadInfo",
    "UploadRejected",
    "create_mount",
]

# Raised by a pre-create function to refuse an upload: ``UploadRejected("why", status=413)``.
UploadRejected = errors.UploadRejected


class TusMount:
    """An ASGI app to mount under any prefix; enter ``lifespan()`` in the host's lifespan."""

    def __init__(self, app: TusApp) -> None:
        self.app = app

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def runtime(self) -> Runtime | None:
        """The open runtime (backends, upload service, catalog), None outside the lifespan."""
        return self.app.runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # Seen as the top-level app: routes match plain paths, URLs get the prefix back.
            scope = mount.rebase(scope)
        await self.app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[TusMount]:
        """Open every backend, start the sweeper; close them on exit. Until it is entered,
        requests are answered 503 "not ready"."""
        if self.app.runtime is not None:
            raise RuntimeError("this TusMount's lifespan is already running")
        async with self.app.router.lifespan_context(self.app):
            yield self

    def begin_shutdown(self) -> None:
        """Tell in-flight PATCHes to store what arrived and answer now (503, resume later),
        e.g. from the host's shutdown signal, before the server waits for connections."""
        if self.app.runtime is not None:
            self.app.runtime.service.begin_shutdown()


def create_mount(
    settings: Settings | None = None,
    *,
    authenticate: AuthenticateFn | None = None,
    pre_create: PreCreateFn | None = None,
    post_finish: PostFinishFn | None = None,
    listener: UploadListener | None = None,
) -> TusMount:
    """tusserver for ``settings`` (default: ``Settings()``, which reads ``TUS_*``), to mount.

    ``authenticate(connection) -> Principal | None``: who sends a request, in place of the
    JWTs of ``settings`` (None: 401). ``pre_create(NewUpload) -> metadata to add | None``:
    asked before each upload is created; raise ``UploadRejected`` to refuse it.
    ``post_finish(UploadInfo)``: called when an upload is complete (possibly again for the
    same upload after a crash: make it idempotent). ``listener``: every lifecycle event.
    """
    listeners = [x for x in (listener, _post_finish(post_finish)) if x is not None]
    app = create_app(
        settings or Settings(),
        authenticator=HostAuthenticator(authenticate) if authenticate is not None else None,
        pre_create=pre_create,
        listener=_one(listeners),
        # The host's event loop keeps the host's default executor.
        io_threads=False,
    )
    return TusMount(app)


def _post_finish(post_finish: PostFinishFn | None) -> UploadListener | None:
    return PostFinishListener(post_finish) if post_finish is not None else None


def _one(listeners: list[UploadListener]) -> UploadListener | None:
    if not listeners:
        return None
    if len(listeners) == 1:
        return listeners[0]
    from tusserver.core.listener import FanOut

    return FanOut(listeners)
