"""The ASGI application: middleware order, the tus dispatcher, health routes and lifespan."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from catalog.backlog import record_backlog
from catalog.routes import catalog_routes
from catalog.service import Catalog, CatalogListener
from catalog.setup import CatalogStartupError, open_catalog
from delivery.quota import LocalQuota, Quota, RedisQuota
from delivery.routes import PUBLIC_PREFIXES as DELIVERY_PUBLIC_PREFIXES
from delivery.routes import delivery_routes
from delivery.service import Delivery
from delivery.signing import UrlSigner
from delivery.tokens import LocalOneTimeStore, OneTimeStore, RedisOneTimeStore
from tusserver import errors, web
from tusserver.api.direct_local import PART_PATH
from tusserver.api.direct_routes import CREATION_PATHS as DIRECT_CREATION_PATHS
from tusserver.api.direct_routes import direct_routes
from tusserver.api.direct_service import open_direct_uploads
from tusserver.api.uploads import CREATION_PATHS, upload_api_routes
from tusserver.auth import AuthMiddleware, TokenVerifier
from tusserver.context import TusContext
from tusserver.dispatch import ServiceSlot, TusDispatch
from tusserver.guards import Guards
from tusserver.handlers.options import discovery_headers
from tusserver.health import Readiness, backend_checks
from tusserver.hooks import Hooks
from tusserver.idempotent_http import IdempotentCreation
from tusserver.jsonapi import not_found
from tusserver.keyring import signing_keys
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
from tusserver.openapi import PATH as OPENAPI_PATH
from tusserver.openapi import openapi_endpoint
from tusserver.ratelimit import RateLimitMiddleware
from tusserver.settings import Settings
from tusserver.singleton_headers import SingletonHeaders
from tusserver.state.lease import FileLease
from tusserver.state.outbox import CatalogOutbox, open_outbox
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
    # Direct uploads announce to all but the catalog, which records them itself (awaited).
    others: list[UploadListener] = [
        x for x in (listener, metrics_listener, hooks.webhook) if x is not None
    ]
    listeners: list[UploadListener] = [*([catalog_listener] if catalog_listener else []), *others]
    direct_events: UploadListener = FanOut(others) if others else NullListener()
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
                outbox=catalog_outbox(settings, parts),
            )
        )

    # Routes that carry their own signature in the URL and so need no bearer token.
    public_prefixes: list[str] = []
    # Filled in the lifespan (the delivery needs the catalog and the opened backends).
    delivery_holder: dict[str, Delivery] = {}
    if settings.catalog:
        public_prefixes.extend(DELIVERY_PUBLIC_PREFIXES)
    slot = ServiceSlot()
    # Idempotency records and rate-limit counters: in-process until Redis is bound below.
    guards = Guards(settings, clock=clock)
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
            app.state.components = parts
            guards.bind(parts.redis if parts is not None else None)
            await stack.enter_async_context(hooks.running())
            loop = asyncio.get_running_loop()
            # File and fsync work runs in threads (local store, local state, SQLite). The
            # default pool (CPUs + 4) queues them behind each other under concurrent uploads;
            # these threads mostly wait on the disk, so more of them cost little.
            executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=64, thread_name_prefix="tus-io"
            )
            loop.set_default_executor(executor)
            stack.callback(executor.shutdown, wait=False, cancel_futures=True)
            # For the signal handler (cli.serve): it may run between two steps of the loop,
            # so the shutdown itself is scheduled on the loop.
            app.state.request_shutdown = lambda: loop.call_soon_threadsafe(service.begin_shutdown)
            catalog = None
            if catalog_listener is not None:
                try:
                    catalog = await open_catalog(
                        settings,
                        service.ctx.composer,
                        stack,
                        clock=clock,
                        head_cache=service.digests.take_head,
                        outbox=service.ctx.outbox,
                    )
                except CatalogStartupError as exc:
                    log.error("startup.failed: %s", exc)
                    raise
                catalog_listener.catalog = catalog
                app.state.catalog = catalog
                stack.callback(setattr, catalog_listener, "catalog", None)
                delivery = open_delivery(settings, service, parts, catalog, clock)
                delivery_holder["delivery"] = delivery
                app.state.delivery = delivery
                stack.callback(delivery_holder.clear)
            app.state.direct = open_direct_uploads(
                settings, service, parts, catalog, events=direct_events
            )
            job = sweep_job(
                settings, service, parts, catalog, app.state.delivery, direct_events=direct_events
            )
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
    # (docs/protocol.md, "CORS"); the tus dispatcher renders its own errors, inside CORS.
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(
            CORSMiddleware,
            origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
            extra_preflight_headers=preflight_headers,
        ),
        # Inside auth (limits count per user), before anything that does work.
        Middleware(
            RateLimitMiddleware,
            limiter=guards.limiter,
            settings=settings,
            creation_paths=(base, base.rstrip("/"), *CREATION_PATHS, *DIRECT_CREATION_PATHS),
            exempt_prefixes=(PART_PATH,),
        ),
        Middleware(TusProtocolMiddleware, base_path=base),
        # Before anything reads a header: a conflicting repeat is refused, not "first wins".
        Middleware(SingletonHeaders, base_path=base),
        # After method override and the 412 check, so it sees the request tus will serve.
        Middleware(
            IdempotentCreation, idempotency=guards.idempotency, paths=(base, base.rstrip("/"))
        ),
        Middleware(TusDispatch, slot=slot, base_path=base),
    ]
    verifier = TokenVerifier.from_settings(settings)
    if verifier is not None:
        # Inside CORS (a browser reads the 401), outside everything that serves a request.
        middleware.insert(
            2,
            Middleware(
                AuthMiddleware,
                verifier=verifier,
                tus_base=base,
                # The list itself: routes added below extend it before the first request.
                public_prefixes=public_prefixes,
            ),
        )
    if web.enabled(settings):
        # Right inside the request id, outside auth: the page is public and asks for the
        # token itself; outside CORS too, as only its own origin loads it.
        middleware.insert(1, Middleware(web.WebUI, settings=settings))
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
        routes += delivery_routes(lambda: delivery_holder.get("delivery"))
    routes += upload_api_routes()
    routes += direct_routes()
    routes.append(Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]))
    # Local part URLs carry their own signature, as S3's presigned URLs do; the API's
    # description is public.
    public_prefixes.extend((PART_PATH, OPENAPI_PATH))
    app = Starlette(
        routes=_anchored(routes),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: not_found},
    )
    app.state.service = slot.service
    app.state.settings = settings
    app.state.catalog = None
    app.state.delivery = None
    app.state.metrics = metrics
    app.state.pre_create_hook = hooks.pre_create
    app.state.idempotency = guards.idempotency
    app.state.limiter = guards.limiter
    return app


def _anchored(routes: list[BaseRoute]) -> list[BaseRoute]:
    """``routes`` matching whole paths only.

    Starlette ends each route's pattern with ``$``, which also matches before a final
    newline: ``DELETE /api/v1/uploads/<id>%0a`` deleted ``<id>``, and ``by-key/<key>%0a``
    found ``<key>``. ``\\Z`` matches only at the very end.
    """
    for route in routes:
        pattern = getattr(route, "path_regex", None)
        if isinstance(pattern, re.Pattern) and pattern.pattern.endswith("$"):
            route.path_regex = re.compile(pattern.pattern[:-1] + r"\Z")  # type: ignore[attr-defined]
    return routes


def catalog_outbox(settings: Settings, parts: Components | None) -> CatalogOutbox | None:
    """Where finished uploads wait for their catalog record: beside the upload state."""
    if not settings.catalog:
        return None
    redis = parts.redis if parts is not None else None
    return open_outbox(settings.data_dir, redis, prefix=settings.redis_prefix)


def open_delivery(
    settings: Settings,
    service: UploadService,
    parts: Components | None,
    catalog: Catalog,
    clock: Callable[[], float],
) -> Delivery:
    """Signed download URLs; one-time tokens and quotas shared through Redis when the
    instances share one."""
    redis = parts.redis if parts is not None else None
    onetime: OneTimeStore
    quota: Quota
    if redis is not None:
        onetime = RedisOneTimeStore(redis, prefix=settings.redis_prefix, clock=clock)
        quota = RedisQuota(
            redis, settings.delivery_daily_quota_per_ip, prefix=settings.redis_prefix, clock=clock
        )
    else:
        onetime = LocalOneTimeStore(settings.data_dir / "delivery" / "onetime", clock=clock)
        quota = LocalQuota(settings.delivery_daily_quota_per_ip, clock=clock)
    return Delivery(
        catalog=catalog,
        composer=service.ctx.composer,
        signer=UrlSigner("download v1", signing_keys(settings)),
        onetime=onetime,
        quota=quota,
        settings=settings,
        clock=clock,
    )


def sweep_job(
    settings: Settings,
    service: UploadService,
    parts: Components | None,
    catalog: Catalog | None,
    delivery: Delivery | None = None,
    *,
    direct_events: UploadListener | None = None,
) -> SweepJob:
    """The sweep the server runs periodically and ``tusserver sweep`` runs on its own."""
    lease = parts.lease if parts is not None and parts.lease is not None else None
    passes: list[tuple[str, SweepPass]] = []
    outbox = service.ctx.outbox
    if catalog is not None and outbox is not None:
        recorder = catalog

        async def outbox_pass() -> object:
            return await record_backlog(service, recorder, outbox)

        passes.append(("catalog_outbox", outbox_pass))
    if catalog is not None:
        found = catalog

        async def catalog_pass() -> object:
            return await found.sweep(lambda upload_id: _purge_upload(service, upload_id))

        passes.append(("catalog", catalog_pass))
    if delivery is not None:
        passes.append(("onetime_tokens_dropped", delivery.drop_expired_tokens))
    direct = open_direct_uploads(settings, service, parts, catalog, events=direct_events)
    is_known = service.exists
    if direct is not None:
        passes.append(("direct", direct.sweep))
        records = direct.records

        async def known_anywhere(upload_id: str) -> bool:
            # A direct upload in progress owns an S3 multipart upload (or parts on disk) that
            # no tus state knows: never an orphan while its record lives.
            return await service.exists(upload_id) or await records.get(upload_id) is not None

        is_known = known_anywhere
    return SweepJob(
        service,
        lease or FileLease(settings.data_dir / ".sweeper.lock"),
        orphan_grace=settings.orphan_grace,
        passes=passes,
        is_known=is_known,
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
