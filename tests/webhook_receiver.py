"""A real HTTP receiver for hook tests: Starlette on uvicorn, on a free loopback port.

It records every POST (headers and body, before answering) and answers from a script: the
next N requests may fail with a status, hang until released, or return a JSON body; after the
script, 200.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.netutil import free_port

HOST = "127.0.0.1"
HANG_LIMIT = 10.0


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json["type"])


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-encoded when not None
    hang: bool = False


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._script: list[Reply] = []
        self._released = asyncio.Event()
        self._arrived = asyncio.Condition()
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host=HOST,
            port=self.port,
            lifespan="off",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str = "/events") -> str:
        return f"http://{HOST}:{self.port}{path}"

    # -- the script -----------------------------------------------------------------------

    def reply_next(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def fail_next(self, count: int, status: int = 503, **headers: str) -> None:
        self.reply_next(*[Reply(status, headers=headers) for _ in range(count)])

    def hang_next(self, count: int = 1) -> None:
        self.reply_next(*[Reply(hang=True) for _ in range(count)])

    def release(self) -> None:
        """Let every hanging request (and any later one scripted to hang) answer 200."""
        self._released.set()

    # -- observing ------------------------------------------------------------------------

    async def wait_for(
        self, done: Callable[[list[Delivery]], bool], timeout: float = 10.0
    ) -> list[Delivery]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: done(self.deliveries))
        return list(self.deliveries)

    async def wait_count(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        return await self.wait_for(lambda seen: len(seen) >= count, timeout)

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.type == event_type]

    # -- serving --------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        delivery = Delivery(
            request.url.path, dict(request.headers), await request.body(), time.time()
        )
        reply = self._script.pop(0) if self._script else Reply()
        async with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()
        if reply.hang:
            try:
                async with asyncio.timeout(HANG_LIMIT):
                    await self._released.wait()
            except TimeoutError:
                pass
            return Response(status_code=200)
        body = b"" if reply.body is None else json.dumps(reply.body).encode()
        return Response(
            body, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    await self._task  # raises why it could not start
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        self._server.should_exit = True
        if self._task is not None:
            await self._task
