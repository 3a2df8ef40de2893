"""The bytes of one S3 part while it fills: in memory up to a small limit, then on local disk.

This module owns ``PartBuffer`` and its promises:

* while a buffer holds at most ``memory_limit`` bytes it keeps the pieces it was given (no
  copy); past that it spills them, and everything appended later, to an anonymous temporary
  file (``tempfile.TemporaryFile``: already unlinked, so a crash leaves nothing behind);
* memory per buffer is therefore about ``memory_limit`` plus two write batches, whatever the
  part size: the batch a worker thread is writing and the one filling behind it;
* disk work (creating the file, writing it) never runs on the event loop: worker threads do it,
  one batch at a time, so batches land in order and ``append`` waits (back-pressure on the
  request body) when the disk is slower than the network;
* the file is never closed while a thread may still write to it, even when the task awaiting
  the write is cancelled: a closed descriptor number can be reused by the next ``open``, and
  a late write would then land in an unrelated file.

The sealed body is either ``bytes`` (never spilled) or the file rewound to 0, which aiobotocore
streams as a request body (botocore seeks it back to 0 before a retry).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tusserver.core.fsutil import pwrite_all

log = logging.getLogger("tusserver.storage")

Piece = bytes | memoryview

# Bytes handed to one thread write once the buffer spilled: large enough that the thread hop
# costs little per byte, small enough that two of them are a small constant per upload.
BATCH = 1024 * 1024


def _create(directory: Path | None) -> BinaryIO:
    """The anonymous file (in a worker thread: even creating a file may wait on the disk)."""
    # Buffered on purpose: BufferedRandom takes a lock around read and close, so closing it
    # while aiohttp's reader thread is mid-read waits for that read instead of pulling the
    # descriptor from under it (a raw FileIO would not).
    return tempfile.TemporaryFile(dir=directory)


def _close_created(creating: asyncio.Future[BinaryIO]) -> None:
    # The creation outlived a cancelled waiter: nobody will ever use that file.
    if not creating.cancelled() and creating.exception() is None:
        creating.result().close()


def _write(file: BinaryIO, pieces: Sequence[Piece], position: int) -> None:
    """Write one batch at its offset (in a worker thread)."""
    pwrite_all(file.fileno(), pieces, position)


class PartBuffer:
    """Collects the bytes of one part (or of the tail); see the module docstring.

    One owner task uses it: ``append`` pieces, then ``seal`` once, then ``close`` (always, also
    on error or cancellation; closing is idempotent and never waits).
    """

    def __init__(
        self, *, memory_limit: int, spool_dir: Path | None = None, batch: int = BATCH
    ) -> None:
        if memory_limit < 0:
            raise ValueError("memory_limit must not be negative")
        if batch < 1:
            raise ValueError("batch must be positive")
        self._memory_limit = memory_limit
        self._spool_dir = spool_dir
        # Never above the limit: whoever asks for little memory gets small batches too (0:
        # every piece is written as it arrives).
        self._batch = min(batch, memory_limit)
        self._pieces: list[Piece] = []
        self._held = 0  # bytes in _pieces
        self._size = 0
        self._spilled = False
        # Where the next batch starts in the file: everything before is written or being so.
        self._written = 0
        self._file: BinaryIO | None = None
        # The write started last (the one that may still run in a thread) and its bytes.
        self._job: asyncio.Future[None] | None = None
        self._job_bytes = 0
        self._sealed = False
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes appended so far."""
        return self._size

    @property
    def spilled(self) -> bool:
        """True once the bytes go to a file rather than stay in memory."""
        return self._spilled

    @property
    def memory(self) -> int:
        """Bytes this buffer keeps in memory: those waiting for a write and those being
        written. At most ``memory_limit`` + one batch + two pieces (the batch being written
        and the one filling, each possibly overshooting by the piece that completed it)."""
        job = self._job
        writing = self._job_bytes if job is not None and not job.done() else 0
        return self._held + writing

    async def append(self, piece: Piece) -> None:
        """Add ``piece`` (kept by reference: it must not change afterwards). May wait for the
        batch in flight; raises ``OSError`` if the spool file cannot be created or written."""
        if self._sealed or self._closed:
            raise RuntimeError("append to a sealed or closed PartBuffer")
        length = len(piece)
        if not length:
            return
        self._pieces.append(piece)
        self._held += length
        self._size += length
        if not self._spilled:
            if self._size <= self._memory_limit:
                return
            self._spilled = True
            log.debug("storage.part_spilled", extra={"size": self._size})
            await self._flush()
        elif self._held >= self._batch:
            await self._flush()

    async def seal(self) -> bytes | BinaryIO:
        """Finish the buffer: its bytes, or the spilled file seeked to 0 once every write
        ended. The buffer still owns the file: ``close`` closes it."""
        if self._sealed or self._closed:
            raise RuntimeError("seal of a sealed or closed PartBuffer")
        if not self._spilled:
            self._sealed = True
            data = b"".join(self._pieces)
            self._pieces.clear()
            self._held = 0
            return data
        if self._pieces:
            await self._flush()
        await self._settle()
        file = self._file
        assert file is not None  # created by the first _flush of a spilled buffer
        # lseek only: no disk I/O on the loop.
        file.seek(0)
        self._sealed = True
        return file

    def close(self) -> None:
        """Drop the bytes and close the file: now, or once the thread writing it is done."""
        self._closed = True
        self._pieces.clear()
        self._held = 0
        job = self._job
        if job is None or job.done():
            self._close_file()
        # Otherwise _job_done closes it when the thread lets go of the descriptor.

    async def _settle(self) -> None:
        """Wait for the job in flight; raise its error (again on every call: a failed write
        leaves a hole, so nothing after it may succeed)."""
        job = self._job
        if job is not None:
            # Shielded: a cancelled waiter leaves the job (and its callback) running.
            await asyncio.shield(job)

    async def _flush(self) -> None:
        """Hand the waiting pieces to a worker thread once the previous batch is written."""
        await self._settle()
        file = self._file
        if file is None:
            file = self._file = await self._create()
        pieces, self._pieces = self._pieces, []
        size, self._held = self._held, 0
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, _write, file, pieces, self._written)
        self._written += size
        self._job = job
        self._job_bytes = size
        # Runs even when nobody awaits the job any more (its waiter was cancelled).
        job.add_done_callback(self._job_done)

    async def _create(self) -> BinaryIO:
        # Awaited on its own, before any write is queued: every write then knows its file.
        # (Learning the file from a done callback instead is a race: awaiting a future that
        # already finished does not yield, so the callback may not have run yet.)
        creating = asyncio.get_running_loop().run_in_executor(None, _create, self._spool_dir)
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(_close_created)
            raise

    def _job_done(self, job: asyncio.Future[None]) -> None:
        # exception() also marks a failure as retrieved: _settle raises it to whoever still
        # waits, and nobody waiting is not worth a "never retrieved" log line.
        if not job.cancelled():
            job.exception()
        if self._closed:
            self._close_file()

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
