"""One worker process of ``tusserver serve --workers N``: the app on the supervisor's socket.

The supervisor spawns ``run`` (a fresh interpreter, nothing inherited but the socket and the
arguments). The worker joins its group (``state.group``) before the app is built, so the
state backend gives it the cross-process upload locks, serves until told to stop, and says
when it is up through its pipe, so the supervisor can tell a worker that cannot start (bad
settings: stop everything) from one that died later (restart it).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import uvicorn

from tusserver.settings import Settings
from tusserver.state.group import WorkerGroup, join
from tusserver.workers.server import GracefulServer, uvicorn_config

# The exit status of a worker whose app did not start (uvicorn's own code for it).
STARTUP_FAILURE = 3
# Ticks of uvicorn's main loop (0.1 s each) between checks that the supervisor still lives.
_PARENT_CHECK_TICKS = 5


class WorkerServer(GracefulServer):
    """``GracefulServer`` for a worker: reports when it is up, stops once however often it
    is signalled (a terminal's Ctrl-C reaches the supervisor and every worker; the supervisor
    forwards a SIGTERM too, and kills what is left after the shutdown timeout), and stops by
    itself when its supervisor is gone."""

    def __init__(
        self, config: uvicorn.Config, app: Any, base_path: str, *, ready: Connection
    ) -> None:
        super().__init__(config, app, base_path)
        self._ready = ready
        self._parent = os.getppid()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready.send(os.getpid())
            self._ready.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if counter % _PARENT_CHECK_TICKS == 0 and os.getppid() != self._parent:
            # Orphaned (the supervisor was killed): stop as if told to, freeing the port.
            self.handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)


class _WorkerField(logging.Filter):
    """Every line a worker logs says which worker (0 to N-1) wrote it."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self._index
        return True


def _exit(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(settings: Settings, sock: socket.socket, group: WorkerGroup, ready: Connection) -> None:
    """The worker's main: build the app, serve on ``sock`` until stopped."""
    from tusserver.app import create_app
    from tusserver.ops.logs import configure as configure_logging

    configure_logging(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(group.index))
    # Until uvicorn takes the stop signals over (and again once it has shut down, when it
    # raises them anew under this handler) a stop signal ends the worker at once, quietly:
    # Python's own SIGINT handler would end it in a KeyboardInterrupt traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit)
    join(group)
    app = create_app(settings)
    server = WorkerServer(uvicorn_config(app, settings), app, settings.base_path, ready=ready)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)
