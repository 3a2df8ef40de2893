"""The catalog's behaviour: record finished uploads, enrich them off the request path, and
answer the owner-scoped reads and edits the REST routes expose.

Recording happens inside the final PATCH (cheap: a ranged read of the first bytes and one
idempotent INSERT). The upload is in the outbox (``tusserver.state.outbox``) from before its
finish is acknowledged until that INSERT commits, so a record that fails (the database down)
is written later by the sweep (``catalog.backlog``), never lost. Everything slow (the sha256
fallback, ffprobe, the thumbnail) runs on a small worker pool afterwards; a record whose
processing never finished (crash, full queue) is picked up again by the sweeper, so no file
stays half-described.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.media import MediaProber
from catalog.models import ORIGINAL_FILENAME_LENGTH, FileRecord
from catalog.repository import FileRepository, ListQuery, Page
from catalog.sniff import SNIFF_BYTES, detect, reconcile
from tusserver.core.digests import EMPTY_SHA256
from tusserver.core.listener import TerminationReason
from tusserver.core.tasks import stop_task
from tusserver.edge.disposition import clean_filename
from tusserver.models import UploadInfo
from tusserver.security.safejson import storable
from tusserver.state.outbox import CatalogOutbox
from tusserver.storage.base import Locator, Reader, Sidecars

log = logging.getLogger("tusserver.catalog")

# Metadata keys clients use for the name and the type (tus-js-client and Uppy send
# ``filename``/``filetype``, Uppy also ``name``/``type``; others use the rest).
FILENAME_KEYS = ("filename", "name", "fileName", "file_name")
TYPE_KEYS = ("filetype", "type", "contentType", "content_type", "mimetype", "mime_type")
THUMBNAIL = "thumb.jpg"
# Large reads for the sha256 fallback: one thread hop per few MiB.
_HASH_BATCH = 4 * 1024 * 1024


@dataclass(frozen=True)
class CatalogConfig:
    anonymous_owner: str = "local"
    media_probe: bool = True
    # A record unprocessed for this long is assumed lost by its worker and redone.
    reprocess_after: float = 600.0
    deleted_grace: float = 3600.0
    workers: int = 2
    queue_size: int = 1000
    presign_ttl: int = 900


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def storable_metadata(metadata: Mapping[str, str | None]) -> dict[str, str | None]:
    """tus metadata as the catalog keeps it: NUL and lone surrogates become U+FFFD.

    tus values are base64 of arbitrary bytes, so a NUL in a file name is legal tus, but
    Postgres refuses it in text and JSON; refusing the record would leave a finished upload
    that never gets cataloged. Invalid UTF-8 was already replaced when the header was parsed.
    """
    return {
        storable(key): storable(value) if isinstance(value, str) else value
        for key, value in metadata.items()
    }


def first_value(metadata: Mapping[str, str | None], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key)
        if value:
            return value
    return None


class Catalog:
    def __init__(
        self,
        repo: FileRepository,
        *,
        reader: Reader | None,
        locator: Locator | None,
        sidecars: Sidecars | None,
        prober: MediaProber | None,
        config: CatalogConfig,
        clock: Callable[[], float],
        head_cache: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.repo = repo
        self._reader = reader
        # The upload service's copy of a finished upload's first bytes (see
        # tusserver.core.digests); storage is read only when it has none.
        self._head_cache = head_cache
        self._locator = locator
        self._sidecars = sidecars
        self._prober = prober
        self.config = config
        self._clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue(config.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._queued: set[str] = set()
        self._processing: dict[str, asyncio.Future[None]] = {}
        # Finished uploads not yet recorded (tusserver.state.outbox): ``record`` clears them.
        self.outbox: CatalogOutbox | None = None

    def now(self) -> datetime:
        return utc(self._clock())

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.config.workers):
            self._workers.append(asyncio.create_task(self._work(), name=f"catalog-worker-{n}"))

    async def stop(self) -> None:
        await asyncio.gather(*(stop_task(task) for task in self._workers))
        self._workers.clear()
        # Queued ids are dropped, not lost: the sweeper requeues unprocessed records.
        self._queue = asyncio.Queue(self.config.queue_size)
        self._queued.clear()

    async def drain(self) -> None:
        """Wait until every queued record was processed (tests, graceful shutdown)."""
        await self._queue.join()

    # -- recording -----------------------------------------------------------------------

    async def record(self, info: UploadInfo) -> bool:
        """Record a finished upload once; True when this call created the record."""
        if info.length is None or self._locator is None:
            return False
        metadata = storable_metadata(info.metadata)
        original = first_value(metadata, FILENAME_KEYS)
        head = await self._head(info)
        verdict = reconcile(first_value(metadata, TYPE_KEYS), detect(head))
        if verdict.mismatch:
            log.warning(
                "catalog.content_type_mismatch",
                extra={
                    "upload_id": info.id,
                    "declared": verdict.declared,
                    "detected": verdict.detected,
                },
            )
        now = self.now()
        sha256 = info.sha256 or (EMPTY_SHA256 if info.length == 0 else None)
        values: dict[str, Any] = {
            "id": info.id,
            "owner": info.owner or self.config.anonymous_owner,
            "filename": clean_filename(original) if original else info.id,
            "original_filename": original[:ORIGINAL_FILENAME_LENGTH] if original else None,
            "storage_backend": self._locator.backend,
            "storage_key": self._locator.storage_key(info),
            "content_type": verdict.content_type,
            "declared_content_type": verdict.declared,
            "detected_content_type": verdict.detected,
            "size": info.length,
            "sha256": sha256,
            "meta": metadata,
            "created_at": utc(info.created_at) if info.created_at else now,
            "finished_at": utc(info.finished_at) if info.finished_at else now,
            "updated_at": now,
        }
        # Nothing left to do off the request path (hashed on the way in, not media): the
        # record is complete as inserted, with no worker round trip per small file.
        done = sha256 is not None and not self._probe_wanted_for(verdict.content_type)
        if done:
            values["processed_at"] = now
        created = await self.repo.add(values)
        await self._recorded(info.id)
        if created:
            log.info("catalog.recorded", extra={"upload_id": info.id, "size": info.length})
            if not done:
                self.enqueue(info.id)
        return created

    async def _recorded(self, upload_id: str) -> None:
        """The row is committed (by this call or an earlier one): the upload leaves the
        outbox. A failure here only costs a second, harmless INSERT from the sweep."""
        if self.outbox is None:
            return
        try:
            await self.outbox.remove(upload_id)
        except Exception:
            log.warning("catalog.outbox_remove_failed", extra={"upload_id": upload_id})

    async def _head(self, info: UploadInfo) -> bytes:
        if not info.length:
            return b""
        wanted = min(SNIFF_BYTES, info.length)
        cached = self._head_cache(info.id) if self._head_cache is not None else None
        if cached is not None and len(cached) >= wanted:
            return cached[:wanted]
        if self._reader is None:
            return b""
        pieces = []
        async for piece in self._reader.read(info, 0, min(SNIFF_BYTES, info.length)):
            pieces.append(piece)
        return b"".join(pieces)

    # -- processing ----------------------------------------------------------------------

    def enqueue(self, file_id: str) -> bool:
        if file_id in self._queued:
            return True
        try:
            self._queue.put_nowait(file_id)
        except asyncio.QueueFull:
            # The sweeper finds unprocessed records later; an upload is never held up.
            log.warning("catalog.queue_full", extra={"upload_id": file_id})
            return False
        self._queued.add(file_id)
        return True

    async def _work(self) -> None:
        while True:
            file_id = await self._queue.get()
            try:
                await self.process(file_id)
            except Exception:
                log.exception("catalog.process_failed", extra={"upload_id": file_id})
            finally:
                self._queued.discard(file_id)
                self._queue.task_done()

    async def process(self, file_id: str) -> None:
        """Fill in the sha256 (if not hashed on the way in), media fields and thumbnail.

        A second caller for the same file (a request that needs the result now, while a
        worker has it) waits for the run in progress instead of probing twice.
        """
        running = self._processing.get(file_id)
        if running is not None:
            await asyncio.shield(running)
            return
        task = asyncio.ensure_future(self._process(file_id))
        self._processing[file_id] = task
        task.add_done_callback(lambda _: self._processing.pop(file_id, None))
        await task

    async def _process(self, file_id: str) -> None:
        record = await self.repo.get_any(file_id)
        if record is None or record.deleted_at is not None or record.processed_at is not None:
            return
        info = UploadInfo(id=record.id, length=record.size, offset=record.size)
        values: dict[str, Any] = {}
        if record.sha256 is None:
            values["sha256"] = await self._hash(info)
        if self._probe_wanted(record):
            values.update(await self._media(info))
        now = self.now()
        values.update(processed_at=now, updated_at=now)
        await self.repo.update_fields(file_id, values)
        log.info("catalog.processed", extra={"upload_id": file_id})

    async def _hash(self, info: UploadInfo) -> str | None:
        if self._reader is None or info.length is None:
            return None
        hasher = hashlib.sha256()
        batch: list[bytes] = []
        size = 0
        async for piece in self._reader.read(info, 0, info.length):
            batch.append(piece)
            size += len(piece)
            if size >= _HASH_BATCH:
                await asyncio.to_thread(_update_all, hasher, batch)
                batch, size = [], 0
        _update_all(hasher, batch)
        return hasher.hexdigest()

    def _probe_wanted(self, record: FileRecord) -> bool:
        return self._probe_wanted_for(record.content_type)

    def _probe_wanted_for(self, content_type: str) -> bool:
        if not self.config.media_probe or self._prober is None or not self._prober.available:
            return False
        # Only what the first bytes (or a declared type the bytes did not contradict) call
        # media: a process per unrecognised file would cost more CPU than the upload did.
        return content_type.startswith(("video/", "audio/"))

    async def _media(self, info: UploadInfo) -> dict[str, Any]:
        assert self._prober is not None
        assert self._locator is not None
        source = await self._locator.media_source(info, self.config.presign_ttl)
        media = await self._prober.probe(source)
        if media is None:
            return {}
        values: dict[str, Any] = {
            "duration_seconds": media.duration_seconds,
            "width": media.width,
            "height": media.height,
            "video_codec": media.video_codec,
            "audio_codec": media.audio_codec,
            "fps": media.fps,
        }
        if media.width and self._sidecars is not None:
            at = None if media.duration_seconds is None else min(1.0, media.duration_seconds / 2)
            thumbnail = await self._prober.thumbnail(source, at_seconds=at)
            if thumbnail is not None:
                values["thumbnail_key"] = await self._sidecars.put_sidecar(
                    info, THUMBNAIL, thumbnail
                )
        return values

    # -- sweeping ------------------------------------------------------------------------

    async def sweep(self, purge_upload: Callable[[str], Awaitable[None]]) -> dict[str, int]:
        """One pass: reclaim the bytes of files deleted long enough ago; requeue records
        whose processing was lost."""
        now = self.now()
        purged = failed = 0
        due = await self.repo.due_for_purge(
            deleted_before=now - timedelta(seconds=self.config.deleted_grace), limit=500
        )
        for record in due:
            try:
                await purge_upload(record.id)
            except Exception:
                failed += 1
                log.exception("catalog.purge_failed", extra={"upload_id": record.id})
                continue
            await self.repo.update_fields(record.id, {"purged_at": now, "updated_at": now})
            purged += 1
        stale = await self.repo.unprocessed(
            finished_before=now - timedelta(seconds=self.config.reprocess_after), limit=500
        )
        requeued = sum(1 for record in stale if self.enqueue(record.id))
        return {"purged": purged, "purge_failed": failed, "requeued": requeued}

    # -- owner-scoped reads and edits (the REST routes) ----------------------------------

    async def list_files(self, query: ListQuery, *, owner: str | None) -> Page:
        return await self.repo.list_page(query, owner=owner)

    async def recent(self, limit: int, *, owner: str | None) -> list[FileRecord]:
        return await self.repo.recent(limit, owner=owner)

    async def get(self, file_id: str, *, owner: str | None) -> FileRecord | None:
        return await self.repo.get(file_id, owner=owner)

    async def get_by_key(self, key: str, *, owner: str | None) -> FileRecord | None:
        return await self.repo.get_by_key(key, owner=owner)

    async def edit(
        self,
        file_id: str,
        *,
        owner: str | None,
        filename: str | None = None,
        metadata: Mapping[str, str | None] | None = None,
    ) -> FileRecord | None:
        values: dict[str, Any] = {"updated_at": self.now()}
        if filename is not None:
            values["filename"] = clean_filename(filename)
        if metadata is not None:
            values["meta"] = dict(metadata)
        return await self.repo.edit(file_id, owner=owner, values=values)

    async def delete(self, file_id: str, *, owner: str | None) -> bool:
        deleted = await self.repo.soft_delete(file_id, owner=owner, now=self.now())
        if deleted:
            log.info("catalog.deleted", extra={"upload_id": file_id})
        return deleted

    async def forget(self, file_id: str) -> None:
        """The upload was terminated (tus DELETE, expiry): its bytes are gone already."""
        record = await self.repo.get_any(file_id)
        if record is not None and record.purged_at is None:
            now = self.now()
            await self.repo.update_fields(
                file_id,
                {"deleted_at": record.deleted_at or now, "purged_at": now, "updated_at": now},
            )

    async def thumbnail(self, record: FileRecord) -> bytes | None:
        if record.thumbnail_key is None or self._sidecars is None:
            return None
        info = UploadInfo(id=record.id, length=record.size, offset=record.size)
        return await self._sidecars.get_sidecar(info, THUMBNAIL)


def _update_all(hasher: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        hasher.update(piece)


class CatalogListener:
    """Records finished uploads and forgets terminated ones: the catalog's UploadListener."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def upload_created(self, info: UploadInfo) -> None:
        return None

    async def upload_finished(self, info: UploadInfo) -> None:
        # A failure is logged by the fan-out (listener.failed); the upload is in the
        # outbox (written before its finished state), so the next sweep records it.
        await self.catalog.record(info)

    async def upload_progress(self, info: UploadInfo) -> None:
        return None

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None:
        # A purge is the catalog's own doing (its sweep asked for it and records it).
        if reason != "purged":
            await self.catalog.forget(info.id)
