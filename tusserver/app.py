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
from catalog.service import Catalog, CatalogListener
from catalog.setup import CatalogStartupError, open_catalog
from tusserver import errors
from tusserver.context import TusContext
from tusserver.dispatch import ServiceSlot, TusDispatch
from tusserver.handlers.options import discovery_headers
from tusserver.health import Readiness, backend_checks
from tusserver.hooks import Hooks
from tusserver.listener import FanOut, NullListener, UploadListener
from tusserver.metrics import (
    NO_METRICS,
    Metrics,
    MetricsListener,
    MetricsMiddleware,
    metrics_endpoint,
)
from tusserver.middleware import CORSMiddleware, RequestIdMiddleware, TusProtocolMiddleware
from tusserver.models import UploadInfo
from tusserver.settings import Settings
from tusserver.state.lease import FileLease
from tusserver.sweep_job import SweepJob
from tusserver.sweeper import SweepPass
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
    metrics: Metrics | None = None,
) -> Starlette:
    settings = settings or Settings()
    # A caller that builds the components itself hands them the same Metrics (locker, S3).
    if metrics is None and settings.metrics:
        metrics = Metrics()
    sink = metrics if metrics is not None else NO_METRICS
    metrics_listener = MetricsListener(sink) if metrics is not None else None
    # The catalog opens in the lifespan, after the service exists: its listener binds late.
    catalog_listener = CatalogListener() if settings.catalog else None
    hooks = Hooks.from_settings(settings)
    listeners: list[UploadListener] = [
        x for x in (catalog_listener, listener, metrics_listener, hooks.webhook) if x is not None
    ]
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
                metrics=sink,
            )
        )

    slot = ServiceSlot()
    if components is None and is_local(settings):
        components = build_components(settings, metrics=sink)
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
            parts = components
            if slot.service is None:
                try:
                    parts = await open_components(settings, stack, metrics=sink)
                except StartupError as exc:
                    log.error("startup.failed: %s", exc)
                    raise
                slot.service = make_service(parts)
            service = slot.service
            app.state.service = service
            await stack.enter_async_context(hooks.running())
            loop = asyncio.get_running_loop()
            # For the signal handler (cli.serve): it may run between two steps of the loop,
            # so the shutdown itself is scheduled on the loop.
            app.state.request_shutdown = lambda: loop.call_soon_threadsafe(service.begin_shutdown)
            catalog = None
            if catalog_listener is not None:
                try:
                    catalog = await open_catalog(settings, service.ctx.composer, stack, clock=clock)
                except CatalogStartupError as exc:
                    log.error("startup.failed: %s", exc)
                    raise
                catalog_listener.catalog = catalog
                app.state.catalog = catalog
                stack.callback(setattr, catalog_listener, "catalog", None)
            job = sweep_job(settings, service, parts, catalog)
            app.state.sweep_job = job
            sweeper = asyncio.create_task(job.run_forever(settings.sweep_interval))
            readiness.start(
                backend_checks(
                    service.ctx.composer,
                    service.ctx.state,
                    catalog.repo.engine if catalog is not None else None,
                ),
                stopping=lambda: service.shutting_down,
            )
            try:
                yield
            finally:
                readiness.stop()
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
    readiness = Readiness()
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.endpoint, methods=["GET"]),
    ]
    if metrics is not None:
        # Outermost, so every answer counts, the middleware's own refusals included.
        middleware.insert(0, Middleware(MetricsMiddleware, metrics=metrics))
        # Outside the tus base path, so the tus middleware leaves it alone.
        routes.append(Route("/metrics", metrics_endpoint(metrics), methods=["GET"]))
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
    app.state.metrics = metrics
    app.state.pre_create_hook = hooks.pre_create
    return app


def sweep_job(
    settings: Settings,
    service: UploadService,
    parts: Components | None,
    catalog: Catalog | None,
) -> SweepJob:
    """The sweep the server runs periodically and ``tusserver sweep`` runs on its own."""
    lease = parts.lease if parts is not None and parts.lease is not None else None
    passes: list[tuple[str, SweepPass]] = []
    if catalog is not None:
        found = catalog

        async def catalog_pass() -> object:
            return await found.sweep(lambda upload_id: _purge_upload(service, upload_id))

        passes.append(("catalog", catalog_pass))
    return SweepJob(
        service,
        lease or FileLease(settings.data_dir / ".sweeper.lock"),
        orphan_grace=settings.orphan_grace,
        passes=passes,
    )


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
            # Announced with reason "purged" (webhooks hear it); the catalog, which is the
            # one asking, ignores that reason.
            await service.terminate(info, event="upload.purged")
    except errors.Locked:
        raise RuntimeError("upload is busy; retried on the next sweep") from None
