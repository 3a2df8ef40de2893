"""In-process per-upload locks with a "please release" signal (the embedded default).

A client whose connection died mid-PATCH comes back with a HEAD while the server still waits
for the dead request's body. A plain lock would stall the client until the read timeout; here
the newcomer asks the holder to stop, the holder persists what it has and lets go, and the
newcomer proceeds. Only one process may use these locks alone: the workers of one server add
OS locks on top (``state.process_locks``), several servers need the Redis locker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tusserver.errors import Locked
from tusserver.ops.metrics import NO_METRICS, MetricsSink


class ReleasableHandle:
    """One acquisition of one upload's lock, with its "please release" signal (shared by
    the in-process and the Redis locker)."""

    __slots__ = ("_callbacks", "_requested", "released")

    def __init__(self) -> None:
        self._requested = False
        self._callbacks: list[Callable[[], None]] = []
        self.released = asyncio.Event()

    @property
    def release_requested(self) -> bool:
        return self._requested

    def on_release_request(self, callback: Callable[[], None]) -> None:
        if self._requested:
            callback()
        else:
            self._callbacks.append(callback)

    def request_release(self) -> None:
        if self._requested:
            return
        self._requested = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class InProcessLocker:
    """Locks keyed by upload id, held in this process's memory."""

    def __init__(self, *, metrics: MetricsSink = NO_METRICS) -> None:
        self._held: dict[str, ReleasableHandle] = {}
        self._metrics = metrics

    def holders(self) -> list[ReleasableHandle]:
        """Every live acquisition (graceful shutdown asks them all to let go)."""
        return list(self._held.values())

    @asynccontextmanager
    async def lock(
        self, upload_id: str, *, wait: float, request_release: bool = True
    ) -> AsyncIterator[ReleasableHandle]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + wait
        asked = waited = False
        try:
            while (holder := self._held.get(upload_id)) is not None:
                waited = wait > 0  # the sweeper's wait=0 probe is not a wait
                if request_release:
                    holder.request_release()
                    if not asked:  # counted once per request, however often it asks
                        asked = True
                        self._metrics.lock_release_requested()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Locked()
                try:
                    async with asyncio.timeout(remaining):
                        await holder.released.wait()
                except TimeoutError:
                    raise Locked() from None
                # Another waiter may have taken the lock first; loop and ask again.
        finally:
            # Counted whether the wait ended with the lock or with a 423.
            if waited:
                self._metrics.lock_waited(loop.time() - started)
        handle = ReleasableHandle()
        self._held[upload_id] = handle
        try:
            yield handle
        finally:
            del self._held[upload_id]
            handle.released.set()
