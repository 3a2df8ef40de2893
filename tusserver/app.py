"""The ASGI application: middleware order, the tus dispatcher, health routes and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

from tusserver.context import TusContext
from tusserver.dispatch import ServiceSlot, TusDispatch
from tusserver.handlers.options import discovery_headers
from tusserver.listener import NullListener, UploadListener
from tusserver.middleware import CORSMiddleware, RequestIdMiddleware, TusProtocolMiddleware
from tusserver.settings import Settings
from tusserver.sweeper import sweep_forever
from tusserver.uploads import UploadService
from tusserver.wiring import (
    Components,
    StartupError,
    build_components,
    is_local,
    open_components,
)

log = logging.getLogger("tusserver")


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

    def make_service(parts: Components) -> UploadService:
        return UploadService(
            TusContext(
                settings=settings,
                composer=parts.composer,
                state=parts.state,
                locker=parts.locker,
                listener=listener or NullListener(),
                clock=clock,
            )
        )

    slot = ServiceSlot()
    if components is None and is_local(settings):
        components = build_components(settings)
    if components is not None:
        # Ready before the lifespan runs, so an app driven without one (tests) still works.
        slot.service = make_service(components)
    base = settings.base_path
    preflight_cache: dict[int, list[tuple[bytes, bytes]]] = {}

    def preflight_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        service = slot.service
        if service is None or not (path.startswith(base) or path == base.rstrip("/")):
            return []
        key = id(service)
        if key not in preflight_cache:
            preflight_cache[key] = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in discovery_headers(service).items()
            ]
        return preflight_cache[key]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if slot.service is None:
                try:
                    opened = await open_components(settings, stack)
                except StartupError as exc:
                    log.error("startup.failed: %s", exc)
                    raise
                slot.service = make_service(opened)
            service = slot.service
            app.state.service = service
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
        Middleware(TusDispatch, slot=slot, base_path=base),
    ]
    app = Starlette(
        routes=[Route("/healthz", healthz, methods=["GET"])],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.service = slot.service
    return app
