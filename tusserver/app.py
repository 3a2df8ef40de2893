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
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from catalog.routes import catalog_routes
from catalog.service import CatalogListener
from catalog.setup import CatalogStartupError, open_catalog
from tusserver import errors
from tusserver.context import TusContext
from tusserver.dispatch import ServiceSlot, TusDispatch
from tusserver.handlers.options import discovery_headers
from tusserver.listener import FanOut, NullListener, UploadListener
from tusserver.middleware import CORSMiddleware, RequestIdMiddleware, TusProtocolMiddleware
from tusserver.models import UploadInfo
from tusserver.settings import Settings
from tusserver.sweeper import SweepPass, sweep_forever
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
    # The catalog opens in the lifespan, after the service exists: its listener binds late.
    catalog_listener = CatalogListener() if settings.catalog else None
    listeners: list[UploadListener] = [x for x in (catalog_listener, listener) if x is not None]
    # FanOut even for one listener: a failing listener (the catalog's database is down) is
    # logged and never fails the upload whose bytes are already safe.
    upload_listener: UploadListener = FanOut(listeners) if listeners else NullListener()

    def make_service(parts: Components) -> UploadService:
        return UploadService(
            TusContext(
                settings=settings,
                composer=parts.composer,
                state=parts.state,
                locker=parts.locker,
                listener=upload_listener,
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
            passes: list[SweepPass] = []
            if catalog_listener is not None:
                try:
                    catalog = await open_catalog(settings, service.ctx.composer, stack, clock=clock)
                except CatalogStartupError as exc:
                    log.error("startup.failed: %s", exc)
                    raise
                catalog_listener.catalog = catalog
                app.state.catalog = catalog
                stack.callback(setattr, catalog_listener, "catalog", None)

                async def purge_upload(upload_id: str) -> None:
                    await _purge_upload(service, upload_id)

                async def catalog_pass() -> object:
                    return await catalog.sweep(purge_upload)

                passes.append(catalog_pass)
            sweeper = asyncio.create_task(sweep_forever(service, settings.sweep_interval, passes))
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
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    if catalog_listener is not None:
        routes += catalog_routes(lambda: catalog_listener.catalog)
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.service = slot.service
    app.state.settings = settings
    app.state.catalog = None
    return app


async def _purge_upload(service: UploadService, upload_id: str) -> None:
    """Remove a deleted catalog file's bytes (and its upload state) for good."""
    try:
        async with service.locked(upload_id, request_release=False, wait=0):
            info = await service.ctx.state.get(upload_id)
            if info is None:
                info = UploadInfo(id=upload_id, length=None)
                terminater = service.ctx.composer.terminater
                if terminater is not None:
                    await terminater.terminate(info)
                return
            # announce=False: the catalog already knows, it is the one asking.
            await service.terminate(info, event="upload.purged", announce=False)
    except errors.Locked:
        raise RuntimeError("upload is busy; retried on the next sweep") from None
