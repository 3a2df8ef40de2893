"""Leases: at most one sweeper works at a time, across processes and machines.

A lease is tried, never waited for: a sweeper that finds it taken skips its pass (the holder
is doing the work). Local: an exclusive ``flock`` on a file in the data dir (the server's
built-in sweeper and a ``tusserver sweep`` process on one disk). Redis: ``SET NX PX`` with a
random token, released by a Lua compare-and-delete, so an expired holder never frees a lease
someone else took over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # redis is an optional extra; only the distributed mode imports it
    from redis.asyncio import Redis


class Lease(Protocol):
    def hold(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """Enter to try the lease: yields True if held (released on exit), else False."""
        ...


class FileLease:
    def __init__(self, path: Path) -> None:
        self._path = path
        # Made once, up front, and kept: the lock is on the open file, not on its existence.
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLease:
    def __init__(self, client: Redis, key: str, *, ttl: float = 600.0) -> None:
        self._redis = client
        self._key = key
        # Longer than any pass should take; a crashed holder blocks sweeping at most this long.
        self._ttl_ms = int(ttl * 1000)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        token = secrets.token_hex(16)
        taken = await self._redis.set(self._key, token, nx=True, px=self._ttl_ms)
        if not taken:
            yield False
            return
        try:
            yield True
        finally:
            await self._redis.eval(_RELEASE, 1, self._key, token)
