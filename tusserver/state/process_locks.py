"""Per-upload locks shared by the worker processes of one server (``serve --workers N``).

Two layers, so contention inside one process stays as cheap as with one worker:

1. the in-process locker (``state.locks``) orders the requests of this process, with its
   release request by method call;
2. then an OS lock orders the processes: a POSIX record lock (``lockf``) on one byte of one
   shared file in the data dir, the byte at an offset derived from the upload id. The kernel
   drops a process's record locks when it exits, however it exits: a SIGKILLed worker frees
   its uploads at once, with no lease to wait out. One file serves every upload (locks may
   lie far beyond its end, it stays empty), so no file is created or removed per upload.

A request that finds the OS lock taken asks the holder to let go through the group's
mailbox (``state.mailbox``), then polls the lock (a few milliseconds apart at first, at most
``_POLL_MAX``) until it is free or ``wait`` runs out (423, as in one process).

Record locks belong to the process, not to a descriptor: the file is opened once and never
closed while locks are held (closing any descriptor of it would drop them all), and two
uploads of one process never share a byte: offsets are 62 bits of the id's hash, so a clash
among a million uploads held at once has odds of about 1 in 10^7.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tusserver.errors import Locked
from tusserver.ops.metrics import NO_METRICS, MetricsSink
from tusserver.state.locks import InProcessLocker, ReleasableHandle
from tusserver.state.mailbox import ReleaseMailbox

_POLL_MIN = 0.005
_POLL_MAX = 0.05
# How often a waiter repeats its release request (a datagram may be lost, or the upload
# may have passed to another holder meanwhile).
_ASK_AGAIN = 0.25
_OFFSET_MASK = (1 << 62) - 1


def lock_offset(upload_id: str) -> int:
    """The byte of the shared lock file that stands for ``upload_id``."""
    digest = hashlib.blake2b(upload_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _OFFSET_MASK


class ProcessLocker:
    """``Locker`` across processes: in-process first, then the upload's byte in ``path``."""

    def __init__(
        self,
        path: Path,
        mailbox: ReleaseMailbox | None = None,
        *,
        metrics: MetricsSink = NO_METRICS,
    ) -> None:
        self._inner = InProcessLocker(metrics=metrics)
        self._mailbox = mailbox
        self._metrics = metrics
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def holders(self) -> list[ReleasableHandle]:
        return self._inner.holders()

    def close(self) -> None:
        """Release everything (a worker just exits: the kernel does the same)."""
        if self._mailbox is not None:
            self._mailbox.close()
        os.close(self._fd)

    def _try(self, offset: int) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    @asynccontextmanager
    async def lock(
        self, upload_id: str, *, wait: float, request_release: bool = True
    ) -> AsyncIterator[ReleasableHandle]:
        deadline = asyncio.get_running_loop().time() + wait
        async with self._inner.lock(
            upload_id, wait=wait, request_release=request_release
        ) as handle:
            offset = lock_offset(upload_id)
            if not self._try(offset):
                await self._wait(upload_id, offset, deadline, request_release=request_release)
            if self._mailbox is not None:
                self._mailbox.hold(upload_id, handle)
            try:
                yield handle
            finally:
                if self._mailbox is not None:
                    self._mailbox.drop(upload_id, handle)
                # Before the in-process lock is let go: a waiter here takes both at once.
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    async def _wait(
        self, upload_id: str, offset: int, deadline: float, *, request_release: bool
    ) -> None:
        """Until this process holds ``offset``, asking the holder to let go; else 423."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        asked_at: float | None = None
        delay = _POLL_MIN
        try:
            while True:
                now = loop.time()
                if request_release and self._mailbox is not None:
                    if asked_at is None:
                        self._metrics.lock_release_requested()
                    if asked_at is None or now - asked_at >= _ASK_AGAIN:
                        self._mailbox.ask(upload_id)
                        asked_at = now
                if now >= deadline:
                    raise Locked()
                await asyncio.sleep(min(delay, deadline - now))
                if self._try(offset):
                    return
                delay = min(delay * 2, _POLL_MAX)
        finally:
            # The sweeper's wait=0 probe is not a wait (as in the in-process locker).
            if deadline > started:
                self._metrics.lock_waited(loop.time() - started)
