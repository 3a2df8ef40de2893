"""The real app, lifespan included, behind an httpx client: how most HTTP-level tests drive it.

``http.app`` is the Starlette app, for tests that look at its state (the service, the catalog,
the sweep job) after a request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.types import ASGIApp

from tusserver.app import create_app
from tusserver.runtime import TusApp
from tusserver.settings import Settings


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=wrap(app) if wrap is not None else app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport) as http:
        http.headers["Tus-Resumable"] = "1.0.0"
        http.app = app  # type: ignore[attr-defined]
        yield http


@contextlib.asynccontextmanager
async def opened(app: TusApp) -> AsyncIterator[TusApp]:
    """``app`` with its lifespan running (its runtime open), for tests that drive it raw."""
    async with app.router.lifespan_context(app):
        yield app
