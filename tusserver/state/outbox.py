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
  Removals that arrive while one runs are done together, in one worker-thread call: the
  catalog commits its inserts in groups, and their marks go the same way.
* Redis: one set, ``<prefix>catalog:pending``, shared by every instance.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Protocol

from tusserver.core.fsutil import fsync_dir
from tusserver.models import checked_upload_id, is_valid_upload_id

# The directory under the data dir that holds the local marks.
LOCAL_DIR = "catalog-pending"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


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
        # Marks waiting for the running removal, and that removal's task (see ``remove``).
        self._removals: list[tuple[Path, asyncio.Future[None]]] = []
        self._remover: asyncio.Task[None] | None = None

    def _path(self, upload_id: str) -> Path:
        return self._root / checked_upload_id(upload_id)

    async def add(self, upload_id: str) -> None:
        await asyncio.to_thread(self._add_sync, self._path(upload_id))

    def _add_sync(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return  # marked already (a finish retried): durable since its first add
        except FileNotFoundError:
            # The first mark ever: the directory itself must outlive a power loss too.
            self._root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._root.parent)
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                return
        os.close(fd)
        fsync_dir(self._root)

    async def remove(self, upload_id: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals.append((self._path(upload_id), future))
        if self._remover is None:
            self._remover = asyncio.create_task(self._remove_queued(), name="outbox-remove")
        await future

    async def _remove_queued(self) -> None:
        try:
            while self._removals:
                batch, self._removals = self._removals, []
                try:
                    await asyncio.to_thread(_unlink_all, [path for path, _ in batch])
                except BaseException as exc:
                    # Cancelled (shutdown): nobody queued behind may wait for ever either.
                    failed = batch if isinstance(exc, Exception) else [*batch, *self._removals]
                    for _, future in failed:
                        if not future.done():
                            future.set_exception(exc)
                    if failed is not batch:
                        self._removals.clear()
                        raise
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._remover = None

    async def pending(self, limit: int) -> list[str]:
        return await asyncio.to_thread(self._pending_sync, limit)

    def _pending_sync(self, limit: int) -> list[str]:
        try:
            with os.scandir(self._root) as entries:
                found = [
                    (entry.stat().st_mtime, entry.name)
                    for entry in entries
                    if is_valid_upload_id(entry.name)
                ]
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
