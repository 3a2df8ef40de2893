"""Upload state on local disk: one JSON file per upload, ``<root>/<id>.json``.

This module owns that layout and its crash behaviour; the bytes of a record are
``state.slots``' two-slot layout. A new record is written whole to a temporary file,
fsync'ed, then linked into place (``os.link`` also refuses an existing id). An update writes
the record's spare slot in place and fdatasyncs it: a reader or a process killed at any
moment sees either the old record or the new one, never half of one. Only a record that
outgrows its slots, or one in the bare-JSON layout of earlier versions, is rewritten through
a temporary file and ``os.replace``.

The finals waiting for a partial live apart from its record, in ``<root>/<partial id>.waiters``
(one final id per line, appended), because the partial's PATCH rewrites its record while a
final may register concurrently.

Upload ids are checked against ``^[0-9a-f]{32}$`` before any path is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tusserver.core.fsutil import check_writable_dir, fsync_dir, pwrite_all
from tusserver.models import UploadInfo, checked_upload_id, is_valid_upload_id
from tusserver.state import slots
from tusserver.state.base import AlreadyExists

log = logging.getLogger("tusserver.state")

_SUFFIX = ".json"
_WAITERS_SUFFIX = ".waiters"
# expired() reads this many records per worker-thread hop.
_SCAN_BATCH = 128


def _encode(info: UploadInfo) -> bytes:
    return json.dumps(info.to_dict(), separators=(",", ":")).encode()


def read_record(path: Path, upload_id: str) -> UploadInfo | None:
    """The record at ``path`` (None if there is none); a corrupt one is logged and reads as
    missing. Both layouts are read: two slots, and the bare JSON of earlier versions."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        payload = slots.parse(raw).payload if slots.is_slotted(raw) else raw
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        info = UploadInfo.from_dict(data)
        if info.id != upload_id:
            raise ValueError(f"record holds id {info.id!r}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Atomic writes should make this impossible; if it happens anyway (disk fault,
        # hand edits) the upload reads as missing instead of failing every request.
        log.error("state.corrupt", extra={"upload_id": upload_id, "error": str(exc)})
        return None
    return info


def _read_fd(fd: int) -> bytes:
    # A record file is a few KiB: one pread has it all (a short one fails parse()).
    return os.pread(fd, os.fstat(fd).st_size, 0)


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _append_line(path: Path, line: bytes) -> None:
    # O_APPEND makes each small write land whole at the end, so concurrent registrations
    # need no lock and never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.write(fd, line) != len(line):
            raise OSError(errno.EIO, f"short append to {path.name}")
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStateStore:
    """``StateStore`` over a directory of JSON files (may share the directory of the bytes)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    async def ping(self) -> None:
        # In a thread: a hung network mount must stall the check, not the event loop.
        await asyncio.to_thread(check_writable_dir, self._root)

    def _path(self, upload_id: str) -> Path:
        return self._root / f"{checked_upload_id(upload_id)}{_SUFFIX}"

    def _write_temp(self, upload_id: str, data: bytes) -> Path:
        # A dot name ending in .tmp: never mistaken for a record by expired().
        fd, name = tempfile.mkstemp(dir=self._root, prefix=f".{upload_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        return Path(name)

    async def create(self, info: UploadInfo) -> None:
        path = self._path(info.id)
        data = slots.encode_file(_encode(info))
        await asyncio.to_thread(self._create_sync, info.id, path, data)

    def _create_sync(self, upload_id: str, path: Path, data: bytes) -> None:
        temp = self._write_temp(upload_id, data)
        try:
            # link() fails if the name exists, so two creates of one id cannot both win,
            # and the record appears complete or not at all.
            os.link(temp, path)
        except FileExistsError:
            raise AlreadyExists(upload_id) from None
        finally:
            temp.unlink()
        # A created upload was promised to the client: make its name survive power loss.
        fsync_dir(self._root)

    async def get(self, upload_id: str) -> UploadInfo | None:
        path = self._path(upload_id)
        return await asyncio.to_thread(read_record, path, upload_id)

    async def update(self, info: UploadInfo) -> None:
        path = self._path(info.id)
        await asyncio.to_thread(self._update_sync, info.id, path, _encode(info))

    def _update_sync(self, upload_id: str, path: Path, payload: bytes) -> None:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                # Gone (deleted meanwhile): written anew, as a replace would have.
                self._replace(upload_id, path, slots.encode_file(payload))
                return
            try:
                # Writers of one record take turns (the upload lock already orders them;
                # this holds without it), and one that waited on a file that was replaced
                # meanwhile starts over on the new one instead of writing into an unlinked
                # inode.
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
                    continue
                self._update_fd(upload_id, path, fd, payload)
                return
            except FileNotFoundError:
                continue
            finally:
                os.close(fd)

    def _update_fd(self, upload_id: str, path: Path, fd: int, payload: bytes) -> None:
        raw = _read_fd(fd)
        current: slots.Current | None = None
        if slots.is_slotted(raw):
            with contextlib.suppress(ValueError):
                current = slots.parse(raw)
        if current is None or not current.fits(len(payload)):
            # Bare JSON of an earlier version, a record grown past its slots, or an
            # unreadable file: rewritten whole, in the two-slot layout with fresh room.
            seq = current.seq + 1 if current is not None else 1
            self._replace(upload_id, path, slots.encode_file(payload, seq))
            return
        pwrite_all(fd, [slots.encode_slot(payload, current.seq + 1)], current.next_position)
        # Data only: the file's size and blocks did not change.
        os.fdatasync(fd)

    def _replace(self, upload_id: str, path: Path, data: bytes) -> None:
        temp = self._write_temp(upload_id, data)
        try:
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        # No directory fsync: if a power loss undoes this rename, the previous record comes
        # back, and its offset is lower, so it still never exceeds the durable bytes. Skipping
        # it saves one journal commit per checkpoint.

    async def delete(self, upload_id: str) -> None:
        paths = (self._path(upload_id), self._waiters_path(upload_id))
        await asyncio.to_thread(_unlink_all, paths)

    def _waiters_path(self, upload_id: str) -> Path:
        return self._root / f"{checked_upload_id(upload_id)}{_WAITERS_SUFFIX}"

    async def add_waiter(self, partial_id: str, final_id: str) -> None:
        path = self._waiters_path(partial_id)
        line = f"{checked_upload_id(final_id)}\n".encode()
        await asyncio.to_thread(_append_line, path, line)

    async def waiters(self, partial_id: str) -> list[str]:
        path = self._waiters_path(partial_id)
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return []
        # A line torn by a crash mid-append fails the id check and is skipped; duplicates
        # (a final registered twice) collapse, keeping first-registration order.
        ids = (line.decode("ascii", "replace") for line in raw.splitlines())
        return list(dict.fromkeys(i for i in ids if is_valid_upload_id(i)))

    async def expired(self, now: float) -> AsyncIterator[UploadInfo]:
        ids = await asyncio.to_thread(self._list_ids)
        for start in range(0, len(ids), _SCAN_BATCH):
            batch = ids[start : start + _SCAN_BATCH]
            for info in await asyncio.to_thread(self._load_many, batch):
                if info.is_complete or info.expires_at is None:
                    continue
                if info.expires_at < now:
                    yield info

    def _list_ids(self) -> list[str]:
        ids = []
        with os.scandir(self._root) as entries:
            for entry in entries:
                upload_id = entry.name.removesuffix(_SUFFIX)
                if upload_id != entry.name and is_valid_upload_id(upload_id):
                    ids.append(upload_id)
        ids.sort()
        return ids

    def _load_many(self, ids: Sequence[str]) -> list[UploadInfo]:
        # Records deleted since the listing read as None and are skipped.
        loaded = (read_record(self._path(upload_id), upload_id) for upload_id in ids)
        return [info for info in loaded if info is not None]
