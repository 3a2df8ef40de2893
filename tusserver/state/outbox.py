"""The catalog outbox: ids of finished uploads whose catalog record may not be written yet.

An upload is marked here *before* its finish is acknowledged (``UploadService.finish`` adds
the id before it writes the finished state, direct uploads before they write theirs) and the
mark is removed only once the catalog's INSERT committed (``Catalog.record``). So whatever
goes wrong in between (the database down, a failover, the process killed) leaves the id here,
and the sweep's ``catalog_outbox`` pass (``catalog.backlog``) records it later: the INSERT is
keyed by the upload id (``ON CONFLICT DO NOTHING``), so recording twice is harmless.

Why a separate outbox rather than a flag in the upload's state record: the sweep finds the
pending ids without reading every upload ever finished, and neither state store's record
format changes. The price is one small durable write per finish, and one removal.

Two stores, beside the upload state they accompany:

* local: one empty file per id in ``<data dir>/catalog-pending/``; the directory is fsync'ed
  after a creation (the mark must outlive a power loss that the finished state survives). A
  removal is not fsync'ed: a mark that comes back only costs a harmless second INSERT.
  Marks (and removals) that arrive while one is being made are made together, in one
  worker-thread call with one directory fsync (``tusserver.core.grouped``).
* Redis: one set, ``<prefix>catalog:pending``, shared by every instance.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tusserver.core.fsutil import fsync_dir, mtime_or_none
from tusserver.core.grouped import GroupedCall
from tusserver.models import checked_upload_id, is_valid_upload_id

# The directory under the data dir that holds the local marks.
LOCAL_DIR = "catalog-pending"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unlink_all(paths: Sequence[Path]) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


class CatalogOutbox(Protocol):
    async def add(self, upload_id: str) -> None:
        """Durably mark the upload as waiting for its catalog record."""
        ...

    async def remove(self, upload_id: str) -> None:
        """Its record is committed (or it is gone); a missing mark is not an error."""
        ...

    async def pending(self, limit: int) -> list[str]:
        """Up to ``limit`` marked ids, oldest first where the store knows the order."""
        ...

    async def count(self) -> int: ...


class LocalCatalogOutbox:
    """Marks as empty files in a directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        # Adds and removals that arrive while one runs are done together (see the module
        # docstring): one worker-thread call, and one directory fsync, per group.
        self._add = GroupedCall(self._add_many)
        self._remove = GroupedCall(_unlink_all)

    def _path(self, upload_id: str) -> Path:
        return self._root / checked_upload_id(upload_id)

    async def add(self, upload_id: str) -> None:
        await self._add(self._path(upload_id))

    def _add_many(self, paths: Sequence[Path]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for path in paths:
            try:
                self._create_mark(path)
            except OSError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        # One sync after every mark of the group exists: it makes them all durable. A mark
        # that existed already (a finish retried) was made durable by its first add.
        fsync_dir(self._root)
        return outcomes

    def _create_mark(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return  # marked already
        except FileNotFoundError:
            # The first mark ever: the directory itself must outlive a power loss too.
            self._root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._root.parent)
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                return
        os.close(fd)

    async def remove(self, upload_id: str) -> None:
        await self._remove(self._path(upload_id))

    async def pending(self, limit: int) -> list[str]:
        return await asyncio.to_thread(self._pending_sync, limit)

    def _pending_sync(self, limit: int) -> list[str]:
        try:
            with os.scandir(self._root) as entries:
                aged = [
                    (mtime_or_none(entry), entry.name)
                    for entry in entries
                    if is_valid_upload_id(entry.name)
                ]
            found = [(mtime, name) for mtime, name in aged if mtime is not None]
        except FileNotFoundError:
            return []
        found.sort()
        return [name for _, name in found[:limit]]

    async def count(self) -> int:
        return len(await self.pending(limit=1 << 62))


class RedisCatalogOutbox:
    """Marks in one Redis set shared by every instance (see the module docstring)."""

    def __init__(self, client: Any, *, prefix: str = "tus:") -> None:
        self._redis = client
        self._key = f"{prefix}catalog:pending"

    async def add(self, upload_id: str) -> None:
        await self._redis.sadd(self._key, checked_upload_id(upload_id))

    async def remove(self, upload_id: str) -> None:
        await self._redis.srem(self._key, checked_upload_id(upload_id))

    async def pending(self, limit: int) -> list[str]:
        ids: list[str] = []
        async for member in self._redis.sscan_iter(self._key, count=min(limit, 1000)):
            upload_id = _text(member)
            if is_valid_upload_id(upload_id):
                ids.append(upload_id)
            if len(ids) >= limit:
                break
        return ids

    async def count(self) -> int:
        return int(await self._redis.scard(self._key))
