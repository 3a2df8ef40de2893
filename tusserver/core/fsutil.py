"""Small file-system durability helpers shared by the local store and local state."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

# pwritev takes at most IOV_MAX buffers per call (1024 on Linux).
_IOV_MAX = 1024


class ShortWrite(OSError):
    """``pwrite_all`` failed part of the way: the bytes before ``reached`` were written (not
    yet synced), the rest were not. A full disk ends a write like this, so the caller can
    keep what fitted instead of throwing it all away."""

    def __init__(self, cause: OSError, reached: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.reached = reached


def pwrite_all(fd: int, buffers: Sequence[bytes | memoryview], position: int) -> None:
    """Write ``buffers`` back to back at ``position`` with ``pwritev``: the pieces go to the
    kernel as they are, never copied into one big buffer first. A short write is legal: the
    rest is written from where it stopped. A failure raises ``ShortWrite``."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        try:
            written = os.pwritev(fd, views[:_IOV_MAX], position)
        except OSError as exc:
            raise ShortWrite(exc, position) from exc
        if written <= 0:
            raise OSError(errno.EIO, "pwritev made no progress")
        position += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


# sync_file_range(2) flag: start writeback of the range's dirty pages, do not wait for it.
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range on Linux (os does not expose it), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``fd[offset:offset+length)`` to disk now, without
    waiting. A later ``fdatasync`` then finds little left to do: a large PATCH's final
    sync (and each checkpoint) no longer waits for everything since the last one, and
    dirty pages do not pile up until the kernel throttles the writer. A hint only: where
    the call is unavailable or fails, nothing changes but the timing."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def check_writable_dir(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` is a directory this process may create files in
    (the readiness check of the local backends: an unmounted volume, a lost permission)."""
    if not stat.S_ISDIR(os.stat(path).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable")


def _fsync_dir_now(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSync:
    """Group commit of one directory's fsync across threads.

    A caller needs an fsync that *starts* after its entry was made. When one is already
    running, it began too early, so the caller waits for it to end and then for the next one,
    which one of the waiters runs for all of them: 16 concurrent creations cost a couple of
    directory fsyncs instead of 16 (each is a journal commit, milliseconds on a real disk).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cond = threading.Condition()
        self._started = 0  # generations begun
        self._done = 0  # the newest generation that completed
        self._running = False

    def sync(self) -> None:
        with self._cond:
            needed = self._started + 1
            while self._done < needed:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                self._cond.release()
                try:
                    _fsync_dir_now(self._path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                # Reached only on success: a failed fsync raises to its runner, and the
                # waiters loop to run their own.
                self._done = max(self._done, generation)


# directory -> its group commit and how many calls are using it right now. An entry lives
# only while a call uses it: a direct upload's parts go to a directory of their own, so a
# table keeping every directory ever synced would grow by one entry per upload for ever.
_dir_syncs: dict[str, tuple[_DirSync, int]] = {}
_dir_syncs_lock = threading.Lock()


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name).

    Concurrent calls for one directory share fsyncs (see ``_DirSync``); each call still
    returns only after an fsync that began after it was called.
    """
    key = os.path.abspath(path)
    with _dir_syncs_lock:
        syncer, users = _dir_syncs.get(key) or (_DirSync(Path(key)), 0)
        _dir_syncs[key] = (syncer, users + 1)
    try:
        syncer.sync()
    finally:
        with _dir_syncs_lock:
            users = _dir_syncs[key][1] - 1
            if users:
                _dir_syncs[key] = (syncer, users)
            else:
                # Nobody waits on it: a later call starts a fresh one, which is as good.
                del _dir_syncs[key]


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` at the file's position (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def close_and_place(fd: int, temp: Path, final: Path) -> None:
    """Sync and close ``fd`` (open on ``temp``), rename ``temp`` to ``final`` and sync the
    directory. On any failure (a full disk can fail the sync) the temp file is removed: a
    half-written temp file must never stay behind."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    # A name of its own per call: two writers of the same file (a worker and a request
    # processing one upload) must not share, and so truncate or rename away, one temp file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    close_and_place(fd, temp, path)


def mtime_or_none(entry: os.DirEntry[str]) -> float | None:
    """``entry``'s modification time, or None if it was deleted since the directory was
    listed. Every listing here races with requests that delete files (a finished outbox
    mark, a terminated upload): one vanished file must not fail the whole listing."""
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return None
