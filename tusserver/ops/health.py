"""Readiness: whether this instance can serve uploads right now (``/readyz``).

This module owns the readiness checks and their answer. Each backend that can be unreachable
checks itself through a small ``ping()`` (the ``Pinger`` protocols of ``storage.base`` and
``state.base``); the catalog database is checked with ``SELECT 1``. Checks run concurrently,
each bounded by a short timeout, so one hung backend cannot stall the probe past the
balancer's own timeout. A failure is reported by exception class only, never its message:
driver messages can quote URLs, passwords included.

Liveness (``/healthz``) is not here: it only says the process answers.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse

from tusserver.state.base import Pinger as StatePinger
from tusserver.state.base import StateStore
from tusserver.storage.base import Pinger as StorePinger
from tusserver.storage.base import StoreComposer

CHECK_TIMEOUT = 2.0

Check = Callable[[], Awaitable[None]]


async def ping_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def backend_checks(
    composer: StoreComposer, state: StateStore, engine: AsyncEngine | None
) -> dict[str, Check]:
    """The checks for what this instance opened; a backend without ``ping`` is not listed."""
    checks: dict[str, Check] = {}
    if isinstance(composer.core, StorePinger):
        checks["storage"] = composer.core.ping
    if isinstance(state, StatePinger):
        checks["state"] = state.ping
    if engine is not None:
        found = engine

        async def database() -> None:
            await ping_database(found)

        checks["database"] = database
    return checks


async def run_check(check: Check, limit: float = CHECK_TIMEOUT) -> str:
    try:
        async with asyncio.timeout(limit):
            await check()
    except Exception as exc:
        return f"failed: {type(exc).__name__}"
    return "ok"


async def run_checks(checks: Mapping[str, Check], limit: float = CHECK_TIMEOUT) -> dict[str, str]:
    names = list(checks)
    results = await asyncio.gather(*(run_check(checks[name], limit) for name in names))
    return dict(zip(names, results, strict=True))


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Readiness:
    """The ``/readyz`` endpoint; the app's lifespan moves it from starting to running (once
    every backend is open) and to stopping (shutdown began: balancers should drain us)."""

    def __init__(self, timeout: float = CHECK_TIMEOUT) -> None:
        self.timeout = timeout
        self.phase = Phase.STARTING
        self.checks: dict[str, Check] = {}
        self.stopping: Callable[[], bool] = lambda: False

    def start(self, checks: dict[str, Check], *, stopping: Callable[[], bool]) -> None:
        self.checks = checks
        self.stopping = stopping
        self.phase = Phase.RUNNING

    def stop(self) -> None:
        self.phase = Phase.STOPPING

    async def endpoint(self, request: Request) -> JSONResponse:
        headers = {"Cache-Control": "no-store"}
        phase = Phase.STOPPING if self.stopping() else self.phase
        if phase is not Phase.RUNNING:
            return JSONResponse({"status": phase.value}, status_code=503, headers=headers)
        results = await run_checks(self.checks, self.timeout)
        ready = all(result == "ok" for result in results.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
            headers=headers,
        )
