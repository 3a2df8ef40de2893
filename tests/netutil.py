"""Loopback helpers shared by the fixtures that start real servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def uvicorn_on_loopback(app: Any, http: Any, **config: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn in this event loop with ``http`` as its protocol class;
    yields the port once it listens. ``config`` overrides uvicorn.Config's options (quiet,
    lifespan off, no websockets by default)."""
    port = free_port()
    options: dict[str, Any] = {
        "lifespan": "off",
        "ws": "none",
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
    }
    options.update(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=http, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
