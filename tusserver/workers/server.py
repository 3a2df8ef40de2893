"""The uvicorn server of ``tusserver serve``: its configuration and graceful stop.

One process runs one ``GracefulServer`` on the socket it binds; each worker of
``--workers N`` runs one on the socket its supervisor bound.
"""

from __future__ import annotations

import gc
import logging
import socket
from types import FrameType
from typing import Any

import uvicorn

from tusserver.settings import Settings


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    from tusserver.edge.httpproto import protocol_class

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Our handler formats uvicorn's records too (JSON or key=value, request ids).
        log_config=None,
        # Forwarded headers are interpreted by us, only when TUS_TRUST_PROXY is set
        # (docs/protocol.md, "Location and proxies").
        proxy_headers=False,
        server_header=False,
        # httptools without uvicorn's two extra copies of every body byte, and with bounds on
        # a request head's size and time (see httpproto).
        http=protocol_class(
            max_header_size=settings.max_header_size, header_timeout=settings.header_timeout
        ),
        # Our h11 protocol (used if httptools is missing) applies the same head limit; this
        # covers uvicorn's own h11 should ours not fit the installed uvicorn.
        h11_max_incomplete_event_size=settings.max_header_size,
        # PATCHes answer within about a second of SIGTERM (see GracefulServer); this bounds
        # the rest.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn's server, plus: on SIGTERM/SIGINT, in-flight PATCHes are told at once to store
    what arrived and answer (503, retry elsewhere), instead of streaming on until uvicorn's
    graceful timeout cancels them mid-write."""

    def __init__(self, config: uvicorn.Config, app: Any, base_path: str = "/") -> None:
        super().__init__(config)
        self._app = app
        self._base_path = base_path

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Said only once the socket is bound: a port in use fails before this line, so the log
        # never claims an address the server does not hold.
        if self.started:
            host, port = self.config.host, self._bound_port()
            log = logging.getLogger("tusserver")
            log.info("tusserver listening on http://%s:%s%s", host, port, self._base_path)
            _freeze_startup_objects()

    def _bound_port(self) -> int:
        """The port actually bound (``--port 0`` asks the OS for a free one)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.config.port

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        from tusserver.runtime import TusApp

        runtime = self._app.runtime if isinstance(self._app, TusApp) else None
        if runtime is not None and not self.should_exit:
            logging.getLogger("tusserver").info("shutdown.requested", extra={"signal": sig})
            runtime.request_shutdown()
        super().handle_exit(sig, frame)


def _freeze_startup_objects() -> None:
    """Take what startup built (modules, the runtime, SQLAlchemy's tables) out of the
    cyclic collector's sight: it lives as long as the process, and every full collection
    walked all of it again. Under 20 concurrent 4 MiB uploads the collector was 15% of the
    server's CPU (perf), most of it traversing these objects."""
    gc.collect()
    gc.freeze()
