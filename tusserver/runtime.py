"""What a running server holds, and how a request reaches it.

``Runtime`` is everything the app's lifespan opened: the backends, the upload service, the
catalog, delivery, direct uploads, the request guards (idempotency records, rate-limit
buckets), the hooks and the sweep job. ``tusserver.compose.open_runtime`` builds it (the only
code that names concrete backends); ``tusserver serve`` and ``tusserver sweep`` both use it.

The app (``TusApp``) holds the open runtime in one typed attribute, set by its lifespan and
cleared when it closes. Routes and middleware reach it through ``running(scope)`` (None
outside the lifespan) or ``runtime_of(request)`` (a 503 "not ready" instead). This module
imports nothing it describes at run time, so every route can import it without cycles.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.types import Scope

from tusserver import errors
from tusserver.settings import Settings

if TYPE_CHECKING:
    from catalog.service import Catalog
    from delivery.service import Delivery
    from tusserver.api.direct_service import DirectUploads
    from tusserver.compose.backends import Components
    from tusserver.core.uploads import UploadService
    from tusserver.hooks import Hooks
    from tusserver.ops.sweep_job import SweepJob
    from tusserver.security.idempotency import Idempotency
    from tusserver.security.ratelimit import RateLimiter


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    # The opened backends: store composer, upload state, locker, sweeper lease.
    components: Components
    service: UploadService
    # ``Idempotency-Key`` records and rate-limit buckets, shared by every instance when the
    # state backend is shared.
    idempotency: Idempotency
    limiter: RateLimiter
    hooks: Hooks
    # None when the catalog is off (``TUS_CATALOG=false``); delivery needs the catalog.
    catalog: Catalog | None
    delivery: Delivery | None
    # None when the store cannot hand out upload URLs.
    direct: DirectUploads | None
    sweep_job: SweepJob
    loop: asyncio.AbstractEventLoop

    def request_shutdown(self) -> None:
        """Ask in-flight uploads to stop, from a signal handler: it may run between two
        steps of the loop, so the shutdown itself is scheduled on the loop."""
        self.loop.call_soon_threadsafe(self.service.begin_shutdown)


class TusApp(Starlette):
    """The Starlette app plus its settings and, while its lifespan runs, its runtime."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.runtime: Runtime | None = None


def running(scope: Scope) -> Runtime | None:
    """The runtime serving this request, or None before the lifespan opened it (or after)."""
    app = scope.get("app")
    return app.runtime if isinstance(app, TusApp) else None


def runtime_of(source: HTTPConnection | TusApp) -> Runtime:
    """The open runtime; a 503 (retry) while the server is not ready."""
    found = source.runtime if isinstance(source, TusApp) else running(source.scope)
    if found is None:
        raise errors.ShuttingDown("the server is not ready yet; retry")
    return found


def settings_of(connection: HTTPConnection) -> Settings | None:
    """The app's settings (known before the lifespan runs), or None for a foreign app."""
    app = connection.scope.get("app")
    return app.settings if isinstance(app, TusApp) else None
