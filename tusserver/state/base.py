"""Protocols for upload state and per-upload locks.

State is the source of truth for an upload's offset; a store only ever advances it after the
bytes are durable. A lock serialises requests on one upload and carries a "please release"
signal so a newcomer (a client resuming after a dead connection) need not wait for a stuck
request to time out.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from tusserver.models import UploadInfo


class AlreadyExists(Exception):
    """Raised by ``StateStore.create`` when the id is taken."""


class StateStore(Protocol):
    async def create(self, info: UploadInfo) -> None:
        """Store a new upload; raise ``AlreadyExists`` if the id is taken."""
        ...

    async def get(self, upload_id: str) -> UploadInfo | None: ...

    async def update(self, info: UploadInfo) -> None:
        """Replace the stored record (the caller holds the upload's lock)."""
        ...

    async def delete(self, upload_id: str) -> None:
        """Remove the record; a missing record is not an error."""
        ...

    def expired(self, now: float) -> AsyncIterator[UploadInfo]:
        """Yield unfinished uploads whose ``expires_at`` is before ``now``."""
        ...

    async def add_waiter(self, partial_id: str, final_id: str) -> None:
        """Record that final upload ``final_id`` waits for partial ``partial_id`` to finish.

        Atomic and lock-free, so a final can be created while a partial's PATCH is running
        (concatenation-unfinished).
        """
        ...

    async def waiters(self, partial_id: str) -> list[str]:
        """The finals registered with ``add_waiter`` for this partial (any order)."""
        ...


@runtime_checkable
class Pinger(Protocol):
    async def ping(self) -> None:
        """Raise if the state store cannot be used right now (readiness; the caller bounds
        the time). Cheap: a directory check, one Redis PING."""
        ...


class LockHandle(Protocol):
    """What the holder of an upload's lock sees."""

    @property
    def release_requested(self) -> bool:
        """True once another request has asked for this upload."""
        ...

    def on_release_request(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when release is requested; at once if it already was."""
        ...

    def request_release(self) -> None:
        """Ask this holder to let go (from this process: graceful shutdown)."""
        ...


class Locker(Protocol):
    def lock(
        self, upload_id: str, *, wait: float, request_release: bool = True
    ) -> AbstractAsyncContextManager[LockHandle]:
        """Hold the upload's lock for the ``async with`` block.

        If it is held, ask the holder to release (unless ``request_release`` is False) and wait
        up to ``wait`` seconds; then raise ``tusserver.errors.Locked``.
        """
        ...


def state_unavailable() -> tuple[type[Exception], ...]:
    """The exceptions that mean the state store is down (Redis down, failing over): an
    outage to retry, 503, never 500. Only the distributed mode imports redis (6 MiB the
    embedded server never loads), and no RedisError can be raised before it did."""
    module = sys.modules.get("redis.exceptions")
    return (module.RedisError,) if module is not None else ()
