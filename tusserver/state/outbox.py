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

    def _path(self, upload_id: str) -> Path:
        return self._root / checked_upload_id(upload_id)

    async def add(self, upload_id: str) -> None:
        await asyncio.to_thread(self._add_sync, self._path(upload_id))

    def _add_sync(self, path: Path) -> None:
        if path.exists():
            return  # marked already (a finish retried): durable since its first add
        if not self._root.is_dir():
            self._root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._root.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        fsync_dir(self._root)

    async def remove(self, upload_id: str) -> None:
        await asyncio.to_thread(self._path(upload_id).unlink, missing_ok=True)

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
