"""The record of a direct-to-storage upload and the two places it is kept.

A direct upload (one presigned PUT, or a multipart upload whose parts go straight to storage)
is not a tus upload: the server never counts its bytes, so it has no offset. It has a record of
its own here, with the same kind of id (32 hex digits), because its finished object *is* that
id's data key, where the catalog and the tus download read it.

``DirectRecords`` has two implementations, picked by the state backend the app runs on:
``LocalDirectRecords`` (one JSON file per upload under ``<data dir>/direct/records``, replaced
atomically) and ``RedisDirectRecords`` (one key per upload with a TTL, plus a sorted set of
active uploads by expiry, so the sweeper never scans the keyspace). Records outlive their
upload's expiry by ``KEEP_AFTER_EXPIRY`` so a late status read or a retried complete still
finds them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tusserver.core.fsutil import atomic_write

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("tusserver.direct")

_ID = re.compile(r"[0-9a-f]{32}")
# A finished (or aborted) record stays readable this long after the upload's expiry.
KEEP_AFTER_EXPIRY = 7 * 86400.0

Kind = Literal["single", "multipart"]


class DirectStatus(enum.StrEnum):
    PENDING = "pending"  # created; no byte seen yet
    UPLOADING = "uploading"  # bytes have started to arrive
    COMPLETED = "completed"  # the object is whole, recorded in the catalog
    FAILED = "failed"  # completion found the object wrong (size); it was deleted
    ABORTED = "aborted"  # the client gave up, or the upload expired


ACTIVE = frozenset({DirectStatus.PENDING, DirectStatus.UPLOADING})


def check_id(upload_id: str) -> str:
    if not isinstance(upload_id, str) or _ID.fullmatch(upload_id) is None:
        raise ValueError(f"invalid upload id: {upload_id!r}")
    return upload_id


@dataclass(frozen=True, slots=True)
class DirectUpload:
    id: str
    kind: Kind
    owner: str
    filename: str
    content_type: str
    # Declared size: always for multipart, optional for a single PUT.
    size: int | None
    status: DirectStatus
    created_at: float
    expires_at: float
    part_size: int | None = None
    num_parts: int = 0
    # The most bytes the object may hold: the declared size, else the creator's limit.
    max_size: int | None = None
    key_prefix: str | None = None
    # The S3 multipart UploadId (None on local disk and for single PUTs).
    multipart_id: str | None = None
    # The bytes sit at the final key: set before the catalog records them, so a complete
    # retried after a catalog outage does not assemble (or complete on S3) twice.
    stored: bool = False
    finished_at: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def expected_part_size(self, number: int) -> int | None:
        """The exact size of part ``number`` (1-based), or None for a single PUT."""
        if self.kind != "multipart" or self.size is None or self.part_size is None:
            return None
        if number < self.num_parts:
            return self.part_size
        return self.size - self.part_size * (self.num_parts - 1)

    def replace(self, **changes: Any) -> DirectUpload:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DirectUpload:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["status"] = DirectStatus(values["status"])
        check_id(values["id"])
        return cls(**values)


class DirectRecords(Protocol):
    async def create(self, upload: DirectUpload) -> None: ...

    async def get(self, upload_id: str) -> DirectUpload | None: ...

    async def put(self, upload: DirectUpload) -> None:
        """Replace the record (the caller holds the upload's lock)."""
        ...

    async def delete(self, upload_id: str) -> None: ...

    def expired(self, now: float) -> AsyncIterator[DirectUpload]:
        """Active uploads whose ``expires_at`` is at or before ``now``."""
        ...

    async def prune(self, now: float) -> int:
        """Drop records kept past ``KEEP_AFTER_EXPIRY``; returns how many."""
        ...


def _decode(raw: bytes | str, upload_id: str) -> DirectUpload | None:
    try:
        return DirectUpload.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError):
        log.error("direct.record_corrupt", extra={"upload_id": upload_id})
        return None


def _encode(upload: DirectUpload) -> bytes:
    return json.dumps(upload.to_dict(), separators=(",", ":")).encode()


class LocalDirectRecords:
    """One JSON file per upload, each write atomic (readers see the old or the new record)."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, upload_id: str) -> Path:
        return self._root / f"{check_id(upload_id)}.json"

    async def create(self, upload: DirectUpload) -> None:
        # Ids are 128 random bits: a collision is not a case to handle, only to refuse.
        path = self._path(upload.id)
        if await asyncio.to_thread(path.exists):
            raise FileExistsError(upload.id)
        await asyncio.to_thread(atomic_write, path, _encode(upload))

    async def get(self, upload_id: str) -> DirectUpload | None:
        path = self._path(upload_id)
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        return _decode(raw, upload_id)

    async def put(self, upload: DirectUpload) -> None:
        await asyncio.to_thread(atomic_write, self._path(upload.id), _encode(upload))

    async def delete(self, upload_id: str) -> None:
        await asyncio.to_thread(self._path(upload_id).unlink, missing_ok=True)

    def _all(self) -> list[DirectUpload]:
        found = []
        for entry in os.scandir(self._root):
            stem, _, suffix = entry.name.partition(".")
            if suffix != "json" or _ID.fullmatch(stem) is None:
                continue
            try:
                with open(entry.path, "rb") as f:
                    upload = _decode(f.read(), stem)
            except FileNotFoundError:
                continue  # deleted while we looked
            if upload is not None:
                found.append(upload)
        return found

    async def expired(self, now: float) -> AsyncIterator[DirectUpload]:
        for upload in await asyncio.to_thread(self._all):
            if upload.active and upload.expires_at <= now:
                yield upload

    async def prune(self, now: float) -> int:
        pruned = 0
        for upload in await asyncio.to_thread(self._all):
            if not upload.active and upload.expires_at + KEEP_AFTER_EXPIRY < now:
                await self.delete(upload.id)
                pruned += 1
        return pruned


class RedisDirectRecords:
    """A key per upload that expires by itself, and a sorted set of active uploads."""

    def __init__(self, client: Redis, *, prefix: str, clock: Callable[[], float]) -> None:
        self._redis = client
        self._prefix = f"{prefix}direct:"
        self._active = f"{prefix}direct-active"
        self._clock = clock

    def _key(self, upload_id: str) -> str:
        return f"{self._prefix}{check_id(upload_id)}"

    def _ttl(self, upload: DirectUpload) -> int:
        return max(1, math.ceil(upload.expires_at + KEEP_AFTER_EXPIRY - self._clock()))

    async def create(self, upload: DirectUpload) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(upload.id), _encode(upload), ex=self._ttl(upload), nx=True)
            pipe.zadd(self._active, {upload.id: upload.expires_at})
            created, _ = await pipe.execute()
        if not created:
            raise FileExistsError(upload.id)

    async def get(self, upload_id: str) -> DirectUpload | None:
        raw = await self._redis.get(self._key(upload_id))
        return None if raw is None else _decode(raw, upload_id)

    async def put(self, upload: DirectUpload) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(upload.id), _encode(upload), ex=self._ttl(upload))
            if upload.active:
                pipe.zadd(self._active, {upload.id: upload.expires_at})
            else:
                pipe.zrem(self._active, upload.id)
            await pipe.execute()

    async def delete(self, upload_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(upload_id))
            pipe.zrem(self._active, upload_id)
            await pipe.execute()

    async def expired(self, now: float) -> AsyncIterator[DirectUpload]:
        raw_ids = await self._redis.zrangebyscore(self._active, "-inf", repr(now), start=0, num=500)
        for raw_id in raw_ids:
            upload_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if _ID.fullmatch(upload_id) is None:
                await self._redis.zrem(self._active, upload_id)
                continue
            upload = await self.get(upload_id)
            if upload is None or not upload.active:
                # The record expired by TTL (or finished) without leaving the index: tidy up.
                await self._redis.zrem(self._active, upload_id)
                continue
            if upload.expires_at <= now:
                yield upload

    async def prune(self, now: float) -> int:
        return 0  # keys expire by themselves
