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

from tusserver.tus.protocol import Hasher

# After a release request, keep taking bytes that are already arriving (they reached the
# server; dropping them would make the client send them again) but stop once the stream is
# idle this long, and in any case after DRAIN_MAX. A HEAD can queue behind the client's
# resumed PATCH and wait out two drains: at 0.5 s that was 1.04 s for the slowest of 200
# HEADs in CI, over the second we promise (tests/faults/test_concurrency.py); at 0.3 s the
# slowest measured 0.33-0.63 s.
DRAIN_IDLE = 0.1
DRAIN_MAX = 0.3


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
        self._drain_until = 0.0
        self.hasher = hasher
        self.received = 0
        self.end: BodyEnd | None = None

    def interrupt(self) -> None:
        """Stop reading soon: drain what is arriving, then end. Safe from another task.

        A receive parked on a dead client is cut short by moving its timeout closer, which
        costs nothing on the hot path (no extra task per chunk).
        """
        if self._interrupted:
            return
        now = asyncio.get_running_loop().time()
        self._interrupted = True
        self._drain_until = now + DRAIN_MAX
        timeout = self._timeout
        if timeout is not None:
            when = timeout.when()
            if when is None or when > now + DRAIN_IDLE:
                timeout.reschedule(now + DRAIN_IDLE)

    async def chunks(self) -> AsyncIterator[bytes]:
        limit = self._limit
        loop = asyncio.get_running_loop()
        while True:
            wait = self._read_timeout
            if self._interrupted:
                left = self._drain_until - loop.time()
                if left <= 0:
                    self.end = BodyEnd.RELEASED
                    return
                wait = min(DRAIN_IDLE, left)
            try:
                async with asyncio.timeout(wait) as timeout:
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
