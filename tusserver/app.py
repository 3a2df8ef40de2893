"""The ASGI application: middleware order, the tus dispatcher, health routes and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from tusserver.context import TusContext
from tusserver.dispatch import TusDispatch
from tusserver.handlers.options import discovery_headers
from tusserver.listener import LoggingListener, UploadListener
from tusserver.middleware import CORSMiddleware, RequestIdMiddleware, TusProtocolMiddleware
from tusserver.settings import Settings
from tusserver.sweeper import sweep_forever
from tusserver.uploads import UploadService
from tusserver.wiring import Components, build_components


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    components: Components | None = None,
    listener: UploadListener | None = None,
) -> Starlette:
    settings = settings or Settings()
    components = components or build_components(settings)
    ctx = TusContext(
        settings=settings,
        composer=components.composer,
        state=components.state,
        locker=components.locker,
        listener=listener or LoggingListener(),
        clock=clock,
    )
    service = UploadService(ctx)
    tus_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in discovery_headers(service).items()
    ]
    base = settings.base_path

    def preflight_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        return tus_headers if path.startswith(base) or path == base.rstrip("/") else []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_forever(service, settings.sweep_interval))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    # Outermost first. CORS wraps everything so even a 412 or a 500 carries its headers
    # (T217); the tus dispatcher renders its own errors, inside CORS.
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(
            CORSMiddleware,
            origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
            extra_preflight_headers=preflight_headers,
        ),
        Middleware(TusProtocolMiddleware, base_path=base),
        Middleware(TusDispatch, service=service),
    ]
    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"])],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.service = service
    return app
