"""The ASGI application: middleware order, the tus dispatcher, routes and the lifespan.

The lifespan opens the runtime (``tusserver.compose.open_runtime``: every backend, the
upload service, catalog, delivery, direct uploads, guards and the sweep job) and puts it on
the app (``TusApp.runtime``); routes and middleware reach it through ``tusserver.runtime``.
This module names no backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from catalog.routes import catalog_routes
from catalog.service import Catalog
from delivery.routes import PUBLIC_PREFIXES as DELIVERY_PUBLIC_PREFIXES
from delivery.routes import delivery_routes
from delivery.service import Delivery
from tusserver import web
from tusserver.api.direct_local import PART_PATH
from tusserver.api.direct_routes import CREATION_PATHS as DIRECT_CREATION_PATHS
from tusserver.api.direct_routes import direct_routes
from tusserver.api.uploads import CREATION_PATHS, upload_api_routes
from tusserver.compose import Components, open_runtime
from tusserver.core.listener import UploadListener
from tusserver.core.tasks import stop_task
from tusserver.edge.idempotent_http import IdempotentCreation
from tusserver.edge.jsonapi import not_found
from tusserver.edge.middleware import CORSMiddleware, RequestIdMiddleware, TusProtocolMiddleware
from tusserver.edge.openapi import PATH as OPENAPI_PATH
from tusserver.edge.openapi import openapi_endpoint
from tusserver.edge.singleton_headers import SingletonHeaders
from tusserver.hooks.callables import PreCreateFn
from tusserver.ietf.detect import is_draft_request
from tusserver.ietf.dispatch import IetfDispatch
from tusserver.ops.health import Readiness, backend_checks
from tusserver.ops.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from tusserver.runtime import Runtime, TusApp, running
from tusserver.security.auth import Authenticator, AuthMiddleware, TokenVerifier
from tusserver.security.idempotency import Idempotency
from tusserver.security.ratelimit import RateLimiter, RateLimitMiddleware
from tusserver.settings import Settings
from tusserver.tus.dispatch import TusDispatch
from tusserver.tus.handlers.options import discovery_headers


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    components: Components | None = None,
    listener: UploadListener | None = None,
    metrics: Metrics | None = None,
    authenticator: Authenticator | None = None,
    pre_create: PreCreateFn | None = None,
    io_threads: bool = True,
) -> TusApp:
    """The app for ``settings``. ``components``: backends the caller opened (and closes);
    ``listener`` hears every upload's lifecycle; ``metrics``: what the backends count into
    (a caller that opens the components hands them the same one); ``authenticator``: who
    sends each request, in place of the JWTs of ``settings``; ``pre_create``: a Python gate on
    new uploads (``tusserver.embed`` passes these two from a host application);
    ``io_threads``: give the event loop a larger default thread pool (not in a host's loop,
    whose executor is the host's)."""
    settings = settings or Settings()
    if metrics is None and settings.metrics:
        metrics = Metrics()
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: TusApp) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if io_threads:
                _use_io_threads(stack)
            runtime = await stack.enter_async_context(
                open_runtime(
                    settings,
                    clock=clock,
                    listener=listener,
                    metrics=metrics,
                    components=components,
                    pre_create=pre_create,
                )
            )
            app.runtime = runtime
            stack.callback(_close, app)
            sweeper = asyncio.create_task(runtime.sweep_job.run_forever(settings.sweep_interval))
            _start_readiness(readiness, runtime)
            try:
                yield
            finally:
                readiness.stop()
                await stop_task(sweeper)

    return TusApp(
        settings,
        routes=_anchored(_routes(settings, metrics, readiness)),
        middleware=_middleware(settings, metrics, authenticator),
        lifespan=lifespan,
        exception_handlers={404: not_found},
    )


def _start_readiness(readiness: Readiness, runtime: Runtime) -> None:
    service = runtime.service
    catalog = runtime.catalog
    readiness.start(
        backend_checks(
            service.ctx.composer,
            service.ctx.state,
            catalog.repo.engine if catalog is not None else None,
        ),
        stopping=lambda: service.shutting_down,
    )


def _routes(settings: Settings, metrics: Metrics | None, readiness: Readiness) -> list[BaseRoute]:
    """Every route beside the tus endpoint (which the middleware serves)."""
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readiness.endpoint, methods=["GET"]),
    ]
    if metrics is not None:
        # Outside the tus base path, so the tus middleware leaves it alone.
        routes.append(Route("/metrics", metrics_endpoint(metrics), methods=["GET"]))
    if settings.catalog:
        routes += catalog_routes(_catalog)
        routes += delivery_routes(settings, _delivery)
    routes += upload_api_routes()
    routes += direct_routes()
    routes.append(Route(OPENAPI_PATH, openapi_endpoint, methods=["GET"]))
    return routes


def _use_io_threads(stack: contextlib.AsyncExitStack) -> None:
    """File and fsync work runs in threads (local store, local state, SQLite). The default
    pool (CPUs + 4) queues them behind each other under concurrent uploads; these threads
    mostly wait on the disk, so more of them cost little."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="tus-io")
    asyncio.get_running_loop().set_default_executor(executor)
    stack.callback(executor.shutdown, wait=False, cancel_futures=True)


def _close(app: TusApp) -> None:
    app.runtime = None


def _catalog(request: Request) -> Catalog | None:
    runtime = running(request.scope)
    return runtime.catalog if runtime is not None else None


def _delivery(request: Request) -> Delivery | None:
    runtime = running(request.scope)
    return runtime.delivery if runtime is not None else None


def _middleware(
    settings: Settings, metrics: Metrics | None, authenticator: Authenticator | None
) -> list[Middleware]:
    """Outermost first. CORS wraps everything so even a 412 or a 500 carries its headers
    (docs/protocol.md, "CORS"); the tus dispatcher renders its own errors, inside CORS."""
    base = settings.base_path
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(
            CORSMiddleware,
            origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
            extra_preflight_headers=_preflight_headers(base),
        ),
        # Inside auth (limits count per user), before anything that does work.
        Middleware(
            RateLimitMiddleware,
            limiter=_limiter,
            settings=settings,
            creation_paths=(base, base.rstrip("/"), *CREATION_PATHS, *DIRECT_CREATION_PATHS),
            exempt_prefixes=(PART_PATH,),
        ),
        Middleware(TusProtocolMiddleware, base_path=base, other_protocol=is_draft_request),
        # Before anything reads a header: a conflicting repeat is refused, not "first wins".
        Middleware(SingletonHeaders, base_path=base),
        # The IETF draft's requests on the same endpoint, before tus's idempotent creation,
        # which speaks tus only (docs/protocol.md, "IETF draft: detection").
        Middleware(IetfDispatch, base_path=base),
        # After method override and the 412 check, so it sees the request tus will serve.
        Middleware(IdempotentCreation, idempotency=_idempotency, paths=(base, base.rstrip("/"))),
        Middleware(TusDispatch, base_path=base),
    ]
    if authenticator is None:
        authenticator = TokenVerifier.from_settings(settings)
    if authenticator is not None:
        # Routes that carry their own signature in the URL need no bearer token (download
        # URLs, local part URLs, as S3's presigned ones); the API's description is public.
        public = [*(DELIVERY_PUBLIC_PREFIXES if settings.catalog else ()), PART_PATH, OPENAPI_PATH]
        # Inside CORS (a browser reads the 401), outside everything that serves a request.
        middleware.insert(
            2,
            Middleware(
                AuthMiddleware,
                authenticator=authenticator,
                tus_base=base,
                public_prefixes=public,
            ),
        )
    if web.enabled(settings):
        # Right inside the request id, outside auth: the page is public and asks for the
        # token itself; outside CORS too, as only its own origin loads it.
        middleware.insert(1, Middleware(web.WebUI, settings=settings))
    if metrics is not None:
        # Outermost, so every answer counts, the middleware's own refusals included.
        middleware.insert(0, Middleware(MetricsMiddleware, metrics=metrics))
    return middleware


def _limiter(scope: Scope) -> RateLimiter | None:
    runtime = running(scope)
    return runtime.limiter if runtime is not None else None


def _idempotency(scope: Scope) -> Idempotency | None:
    runtime = running(scope)
    return runtime.idempotency if runtime is not None else None


def _preflight_headers(base: str) -> Callable[[Scope], list[tuple[bytes, bytes]]]:
    """tus discovery headers on preflights to tus paths (computed once per runtime)."""
    cache: dict[int, list[tuple[bytes, bytes]]] = {}

    def headers(scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        runtime: Runtime | None = running(scope)
        if runtime is None or not (path.startswith(base) or path == base.rstrip("/")):
            return []
        service = runtime.service
        key = id(service)
        if key not in cache:
            cache.clear()  # one runtime at a time
            cache[key] = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in discovery_headers(service).items()
            ]
        return cache[key]

    return headers


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
