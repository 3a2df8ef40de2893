"""Streaming a request body straight from ASGI ``receive``, never buffering it whole.

Every way a body can stop early (client disconnect, idle timeout, another request asking for
the upload, too many bytes) becomes a clean end of stream with a recorded reason. The store
then keeps whatever arrived, and the handler decides what to answer from ``end``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator

from starlette.types import Receive

from tusserver.protocol import Hasher


class BodyEnd(enum.Enum):
    COMPLETE = "complete"
    DISCONNECTED = "disconnected"
    TIMED_OUT = "timed_out"
    RELEASED = "released"
    TOO_LARGE = "too_large"


class BodyReader:
    """Yields body chunks up to ``limit`` bytes, hashing them on the way if asked."""

    def __init__(
        self,
        receive: Receive,
        *,
        limit: int | None,
        read_timeout: float,
        hasher: Hasher | None = None,
    ) -> None:
        self._receive = receive
        self._limit = limit
        self._read_timeout = read_timeout
        self._timeout: asyncio.Timeout | None = None
        self._interrupted = False
        self.hasher = hasher
        self.received = 0
        self.end: BodyEnd | None = None

    def interrupt(self) -> None:
        """Stop reading as soon as possible; safe to call from another task.

        A receive that is parked waiting for a dead client is woken by firing its timeout
        now, which costs nothing on the hot path (no extra task per chunk).
        """
        self._interrupted = True
        if self._timeout is not None:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    async def chunks(self) -> AsyncIterator[bytes]:
        limit = self._limit
        while True:
            if self._interrupted:
                self.end = BodyEnd.RELEASED
                return
            try:
                async with asyncio.timeout(self._read_timeout) as timeout:
                    self._timeout = timeout
                    message = await self._receive()
            except TimeoutError:
                self.end = BodyEnd.RELEASED if self._interrupted else BodyEnd.TIMED_OUT
                return
            finally:
                self._timeout = None
            if message["type"] == "http.disconnect":
                self.end = BodyEnd.DISCONNECTED
                return
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if body:
                if limit is not None and self.received + len(body) > limit:
                    # Keep what fits (tusd does the same for chunked bodies), then stop.
                    body = body[: limit - self.received]
                    more = False
                    self.end = BodyEnd.TOO_LARGE
                if body:
                    self.received += len(body)
                    if self.hasher is not None:
                        self.hasher.update(body)
                    yield body
                if self.end is BodyEnd.TOO_LARGE:
                    return
            if not more:
                self.end = BodyEnd.COMPLETE
                return
