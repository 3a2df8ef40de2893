"""Upload bytes on local disk: one file per upload, ``<root>/<id>.bin``.

This module owns that layout and the local write path's promises:

* bytes land at their absolute position (``os.pwrite``), so a retried request simply overwrites
  what an earlier, unacknowledged request left behind, and the file is cut to the new end;
* the event loop only gathers chunks; disk work runs in a worker thread, one batch at a time,
  while the next batch fills (double buffering: memory per upload is about two write buffers);
* ``on_progress`` only ever hears of bytes that ``fdatasync`` has made durable, so an offset
  recorded from it never runs ahead of the disk, even across a power loss;
* a writer holding a Redis lock (several processes on one disk) writes, cuts or truncates
  only while its lease is valid (``check_held``): a stale one cannot cut off bytes that the
  new holder wrote past its end;
* a file descriptor is never closed while a worker thread may still use it (a recycled fd
  number would otherwise let a late ``pwrite`` land in an unrelated file).

Upload ids are checked against ``^[0-9a-f]{32}$`` before any path is built, whatever the HTTP
layer already checked: a path is never made from an unvalidated string.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tusserver import errors
from tusserver.core.fsutil import (
    ShortWrite,
    atomic_write,
    check_writable_dir,
    fsync_dir,
    mtime_or_none,
    pwrite_all,
    start_writeback,
)
from tusserver.core.grouped import GroupedCall
from tusserver.models import UploadInfo, checked_upload_id, is_valid_upload_id
from tusserver.state.fence import check_held
from tusserver.storage.base import (
    SIDECAR_NAMES,
    KnownCheck,
    ProgressCallback,
    check_sidecar_name,
)

log = logging.getLogger("tusserver.storage")

T = TypeVar("T")

_MiB = 1024 * 1024
_READ_PIECE = _MiB
# The read/write fallback of ``concat`` holds this much in memory at once.
_COPY_PIECE = _MiB
# copy_file_range works in the kernel, so large requests cost no memory; capped below the
# kernel's own per-call limit (about 2 GiB).
_KERNEL_COPY_PIECE = 1024 * _MiB
# copy_file_range refuses some pairs of files (across file systems on older kernels, special
# file systems, no syscall at all); any other error is a real I/O error and is raised.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})
# Upload data is private to the server; whoever serves it reads it through us.
_FILE_MODE = 0o600


def _write_batch(fd: int, buffers: Sequence[bytes], position: int, sync: bool) -> None:
    pwrite_all(fd, buffers, position)
    if sync:
        os.fdatasync(fd)
    else:
        start_writeback(fd, position, sum(len(b) for b in buffers))


def _write_last_batch(fd: int, buffers: Sequence[bytes], position: int) -> None:
    pwrite_all(fd, buffers, position)
    # Cut off whatever an earlier, longer and never acknowledged write left past the new end.
    os.ftruncate(fd, position + sum(len(b) for b in buffers))
    os.fdatasync(fd)


def _settle_written(path: Path, durable: int, reached: int) -> int:
    """Cut the file at ``reached`` (a stale tail past it is never acknowledged, and cutting it
    frees room) and sync; return ``reached``, or ``durable`` if that cannot be done."""
    try:
        fd = os.open(path, _WRITE_FLAGS)
    except OSError:
        return durable
    try:
        os.ftruncate(fd, reached)
        os.fdatasync(fd)
    except OSError:
        return durable
    finally:
        os.close(fd)
    return reached


def _copy_range(src: int, dst: int, length: int, dst_position: int) -> None:
    """Copy ``src[0:length)`` to ``dst`` at ``dst_position``; kernel copy when possible."""
    src_position = 0
    kernel = hasattr(os, "copy_file_range")
    while src_position < length:
        remaining = length - src_position
        if kernel:
            try:
                copied = os.copy_file_range(
                    src, dst, min(remaining, _KERNEL_COPY_PIECE), src_position, dst_position
                )
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                # Explicit offsets mean nothing is lost: carry on from here by hand.
                kernel = False
                continue
        else:
            data = os.pread(src, min(remaining, _COPY_PIECE), src_position)
            pwrite_all(dst, [data], dst_position)
            copied = len(data)
        if copied == 0:
            raise EOFError(f"source holds {src_position} bytes, expected {length}")
        src_position += copied
        dst_position += copied


class _ThreadFd:
    """A file descriptor that worker threads use one call at a time.

    Every call is awaited through ``asyncio.shield``, so cancelling the awaiting task never
    loses track of a call that is still running in its thread; ``close`` waits for such a
    call (by callback) instead of pulling the descriptor from under it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._busy: asyncio.Future[Any] | None = None

    @classmethod
    async def open(cls, path: Path, flags: int) -> _ThreadFd:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, os.open, path, flags)
        try:
            return cls(await asyncio.shield(opening))
        except asyncio.CancelledError:
            # The open may still succeed in its thread; that descriptor is ours to close.
            opening.add_done_callback(_close_opened)
            raise

    def start(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``func(fd, *args)`` in a worker thread; the previous call must be finished."""
        assert self._busy is None or self._busy.done(), "one thread call at a time"
        busy = asyncio.get_running_loop().run_in_executor(None, func, self.fd, *args)
        self._busy = busy
        return busy

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.shield(self.start(func, *args))

    async def settle(self) -> None:
        """Wait until no thread uses the descriptor (without raising its errors)."""
        if self._busy is not None and not self._busy.done():
            await asyncio.wait([self._busy])

    def close(self) -> None:
        busy = self._busy
        if busy is None or busy.done():
            if busy is not None and not busy.cancelled():
                busy.exception()  # an error nobody awaited is dropped, not reported at GC
            os.close(self.fd)
        else:
            fd = self.fd
            busy.add_done_callback(lambda done: _close_after(fd, done))


def _close_opened(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        os.close(opening.result())


def _close_after(fd: int, done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
    os.close(fd)


# No O_CREAT: a missing file means the upload was terminated, which must not be undone by a
# late PATCH (FileNotFoundError reaches the caller of LocalStore.write).
_WRITE_FLAGS = os.O_WRONLY | os.O_CLOEXEC


def _write_whole(path: Path, buffers: Sequence[bytes], position: int) -> None:
    fd = os.open(path, _WRITE_FLAGS)
    try:
        _write_last_batch(fd, buffers, position)
    finally:
        os.close(fd)


class _BatchWriter:
    """The double buffer of one ``write`` call: at most one batch in flight in a thread.

    The file is opened by the first batch. A body that ends before its first batch is full
    (most small uploads and chunks) is opened, written, synced and closed in a single worker
    thread call instead of three.
    """

    def __init__(self, path: Path, position: int) -> None:
        self._path = path
        self._fd: _ThreadFd | None = None
        # Where the next batch starts: everything before it is written or being written.
        self.end = position
        self._in_flight: asyncio.Future[None] | None = None
        self._in_flight_end = position
        self._in_flight_synced = False
        # The end of what is known to be on disk for good: where a failed write falls back to.
        self.durable = position

    @property
    def idle(self) -> bool:
        """True when a batch has finished and can be collected without waiting."""
        return self._in_flight is not None and self._in_flight.done()

    async def collect(self) -> int | None:
        """Wait for the batch in flight; return its end offset if it was made durable."""
        in_flight = self._in_flight
        if in_flight is None:
            return None
        await asyncio.shield(in_flight)
        self._in_flight = None
        if not self._in_flight_synced:
            return None
        self.durable = self._in_flight_end
        return self.durable

    async def submit(self, data: list[bytes], size: int, *, sync: bool) -> int | None:
        """Start writing ``data`` (``size`` bytes) once the previous batch is done; return
        that batch's durable end (see ``collect``)."""
        durable = await self.collect()
        if self._fd is None:
            self._fd = await _ThreadFd.open(self._path, _WRITE_FLAGS)
        self._in_flight = self._fd.start(_write_batch, data, self.end, sync)
        self.end += size
        self._in_flight_end = self.end
        self._in_flight_synced = sync
        return durable

    async def finish(self, data: list[bytes], size: int) -> int:
        """Write the last batch, cut the file there and make it all durable; return the end."""
        await self.collect()
        # Tracked like any batch, so a cancellation here still closes the fd only afterwards.
        if self._fd is None:
            loop = asyncio.get_running_loop()
            self._in_flight = loop.run_in_executor(None, _write_whole, self._path, data, self.end)
        else:
            self._in_flight = self._fd.start(_write_last_batch, data, self.end)
        self._in_flight_synced = False
        await self.collect()
        self.end += size
        self.durable = self.end
        return self.end

    async def close(self) -> None:
        """Wait until no thread writes for this call any more, then close the file. Returning
        while a batch is still being written would let it race with the next request on this
        upload (stale bytes landing after newer ones)."""
        if self._fd is not None:
            try:
                await self._fd.settle()
            finally:
                self._fd.close()
        elif self._in_flight is not None and not self._in_flight.done():
            await asyncio.wait([self._in_flight])


class LocalStore:
    """Every byte-store capability, for uploads kept as files in one directory."""

    # finish() has nothing to do: bytes are written in place (see StoreComposer).
    finish_is_free = True

    def __init__(
        self,
        root: Path,
        *,
        write_buffer: int = _MiB,
        checkpoint_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if write_buffer <= 0:
            raise ValueError("write_buffer must be positive")
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._write_buffer = write_buffer
        self._checkpoint_interval = checkpoint_interval
        self._clock = clock
        # New uploads' files: those created while one group is being made share the next
        # worker-thread call and directory fsync.
        self._create = GroupedCall(self._create_files)

    @property
    def root(self) -> Path:
        return self._root

    async def ping(self) -> None:
        # In a thread: a hung network mount must stall the check, not the event loop.
        await asyncio.to_thread(check_writable_dir, self._root)

    def _bin(self, upload_id: str) -> Path:
        return self._root / f"{checked_upload_id(upload_id)}.bin"

    def _sidecar(self, upload_id: str, name: str) -> Path:
        return self._root / f"{checked_upload_id(upload_id)}.{check_sidecar_name(name)}"

    # Locator

    @property
    def backend(self) -> str:
        return "local"

    def storage_key(self, info: UploadInfo) -> str:
        return self._bin(info.id).name

    async def media_source(self, info: UploadInfo, ttl: int) -> str:
        return str(self._bin(info.id).absolute())

    async def stored_size(self, info: UploadInfo) -> int | None:
        try:
            return (await asyncio.to_thread(self._bin(info.id).stat)).st_size
        except FileNotFoundError:
            return None

    # Sidecars

    async def put_sidecar(self, info: UploadInfo, name: str, data: bytes) -> str:
        path = self._sidecar(info.id, name)
        await asyncio.to_thread(atomic_write, path, data)
        return path.name

    async def get_sidecar(self, info: UploadInfo, name: str) -> bytes | None:
        path = self._sidecar(info.id, name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    # DataStore

    async def create(self, info: UploadInfo) -> UploadInfo:
        await self._create(self._bin(info.id))
        return info

    def _create_files(self, paths: Sequence[Path]) -> list[BaseException | None]:
        """Create the empty files of new uploads, then sync the directory once for all."""
        outcomes: list[BaseException | None] = []
        created: list[Path] = []
        for path in paths:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
            except OSError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
                created.append(path)
        if created:
            try:
                # The client is told the upload exists; that must survive a power loss too.
                fsync_dir(self._root)
            except BaseException:
                for path in created:
                    path.unlink(missing_ok=True)  # a failed creation leaves no file behind
                raise
        return outcomes

    async def write(
        self,
        info: UploadInfo,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None = None,
    ) -> int:
        # Opened with _WRITE_FLAGS: a terminated upload's missing file stays missing.
        path = self._bin(info.id)
        writer = _BatchWriter(path, info.offset)
        try:
            try:
                end = await self._pump(writer, chunks, on_progress)
            finally:
                await writer.close()
        except OSError as exc:
            full = errors.storage_full(exc)
            if full is None:
                raise
            kept = await self._keep_written(path, writer.durable, exc, on_progress)
            log.warning(
                "storage.disk_full",
                extra={"upload_id": info.id, "errno": exc.errno, "offset": kept},
            )
            raise full from exc
        return end - info.offset

    @staticmethod
    async def _keep_written(
        path: Path, durable: int, exc: OSError, on_progress: ProgressCallback | None
    ) -> int:
        """After a full disk ended a write: make the bytes that did fit durable and report
        them, so the client resumes after them instead of sending them again. Return the
        durable end."""
        reached = max(exc.reached, durable) if isinstance(exc, ShortWrite) else durable
        kept = await asyncio.to_thread(_settle_written, path, durable, reached)
        if on_progress is not None and kept > durable:
            await on_progress(kept)
        return kept

    async def _pump(
        self,
        writer: _BatchWriter,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None,
    ) -> int:
        async def report(durable: int | None) -> None:
            if durable is not None and on_progress is not None:
                await on_progress(durable)

        clock = self._clock
        limit = self._write_buffer
        interval = self._checkpoint_interval
        last_checkpoint = clock()
        batch: list[bytes] = []
        size = 0
        async for chunk in chunks:
            if not chunk:
                continue
            if writer.idle:
                # Report a finished checkpoint now rather than when the next batch is full:
                # a slow client would otherwise wait a whole buffer for its progress.
                await report(await writer.collect())
            now = clock()
            # Checked per chunk, not only per full buffer: a slow client still gets a
            # checkpoint every interval instead of one per write_buffer bytes.
            due = now - last_checkpoint >= interval
            # The chunks themselves are kept (bytes are immutable) and written with one
            # pwritev: no copy into a growing buffer.
            batch.append(chunk)
            size += len(chunk)
            if size < limit and not due:
                continue
            if due:
                last_checkpoint = now
            check_held()
            await report(await writer.submit(batch, size, sync=due))
            batch, size = [], 0
        check_held()
        return await writer.finish(batch, size)

    async def finish(self, info: UploadInfo) -> UploadInfo:
        # The file is already whole: bytes were written in place.
        checked_upload_id(info.id)
        return info

    # Terminater

    async def terminate(self, info: UploadInfo) -> None:
        await asyncio.to_thread(self._bin(info.id).unlink, missing_ok=True)
        for name in SIDECAR_NAMES:
            await asyncio.to_thread(self._sidecar(info.id, name).unlink, missing_ok=True)

    # LengthDeferrer

    async def declare_length(self, info: UploadInfo) -> UploadInfo:
        # The length lives in the upload state; a local file needs no size in advance.
        checked_upload_id(info.id)
        return info

    # OrphanSweeper

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        """Delete ``<id>.bin`` files (and sidecars) whose upload no state knows, once they
        are older than ``older_than``: left by a crash between creating the file and
        recording the upload, or by state lost with its directory."""
        candidates = await asyncio.to_thread(self._old_files, older_than)
        removed = 0
        for upload_id in candidates:
            if await is_known(upload_id):
                continue
            await self.terminate(UploadInfo(id=upload_id, length=None))
            log.warning("storage.orphan_removed", extra={"upload_id": upload_id})
            removed += 1
        return removed

    def _old_files(self, older_than: float) -> list[str]:
        found: list[str] = []
        for entry in os.scandir(self._root):
            stem, _, suffix = entry.name.partition(".")
            if suffix != "bin" or not is_valid_upload_id(stem) or not entry.is_file():
                continue
            mtime = mtime_or_none(entry)
            if mtime is not None and mtime < older_than:
                found.append(stem)
        return found

    # Concater

    async def concat(self, final: UploadInfo, partials: Sequence[UploadInfo]) -> None:
        sources: list[tuple[Path, int]] = []
        for partial in partials:
            if partial.length is None:
                raise ValueError(f"partial upload {partial.id} has no length")
            sources.append((self._bin(partial.id), partial.length))
        try:
            await asyncio.to_thread(self._concat_files, self._bin(final.id), sources)
        except OSError as exc:
            full = errors.storage_full(exc)
            if full is None:
                raise
            log.warning("storage.disk_full", extra={"upload_id": final.id, "errno": exc.errno})
            raise full from exc

    @staticmethod
    def _concat_files(target: Path, sources: Sequence[tuple[Path, int]]) -> None:
        # No O_TRUNC: the file is rewritten from 0 and cut to size at the end, which also
        # repairs a previous, interrupted concat.
        out = os.open(target, os.O_WRONLY | os.O_CREAT, _FILE_MODE)
        try:
            position = 0
            for path, length in sources:
                src = os.open(path, os.O_RDONLY)
                try:
                    _copy_range(src, out, length, position)
                finally:
                    os.close(src)
                position += length
            os.ftruncate(out, position)
            os.fdatasync(out)
        except OSError:
            # A half-assembled file is worthless (the next attempt rewrites it from 0) and
            # may be what filled the disk: give the room back now.
            with contextlib.suppress(OSError):
                os.ftruncate(out, 0)
            raise
        finally:
            os.close(out)

    # Reader

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield ``[start, end)``; stops early if the file is shorter than ``end``."""
        fd = await _ThreadFd.open(self._bin(info.id), os.O_RDONLY)
        try:
            position = start
            while position < end:
                piece = await fd.run(os.pread, min(_READ_PIECE, end - position), position)
                if not piece:
                    return
                position += len(piece)
                yield piece
        finally:
            fd.close()

    # Truncater

    async def truncate(self, info: UploadInfo, offset: int) -> None:
        # No fdatasync: if a crash undoes the truncation, the stale tail lies past the
        # recorded offset, where the next write overwrites it anyway.
        check_held()
        await asyncio.to_thread(os.truncate, self._bin(info.id), offset)

    # Reconciler

    async def reconcile(self, info: UploadInfo) -> UploadInfo:
        path = self._bin(info.id)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            # A final upload has no file until its partials are concatenated.
            size = 0
        if size >= info.offset:
            return info
        log.warning(
            "storage.offset_reconciled",
            extra={"upload_id": info.id, "recorded_offset": info.offset, "stored_bytes": size},
        )
        return info.replace(offset=size)
