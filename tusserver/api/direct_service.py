"""Direct uploads' lifecycle: create, sign URLs, accept local parts, complete, abort, sweep.

The rules that keep them safe live here, apart from HTTP:

* the object key is the store's data key of a fresh upload id, never a client's choice; a
  client's ``key_prefix`` is kept as metadata only;
* every read or change is scoped to the owner (someone else's upload is "not found"), and
  complete, abort and the sweep hold the upload's lock (the tus locker: one instance at a time);
* complete verifies what storage holds (size, and on local disk every part's ETag) before the
  upload counts; a finished object is written into the upload state as a finished upload (so
  the orphan sweep keeps it and ``GET /files/{id}`` serves it) and recorded in the catalog;
* expired unfinished uploads are aborted by the sweep, their parts removed;
* each upload's lifecycle is announced to the same listeners as tus uploads' (webhooks,
  metrics), the catalog excepted: completing records it here, awaited, so that a failure
  fails the complete and a retry records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass

from catalog.models import FileRecord
from catalog.service import Catalog
from tusserver import errors
from tusserver.api.direct_backend import (
    CompletedPart,
    DirectBackend,
    PartsRejected,
    Target,
    check_part_list,
    plan_multipart,
)
from tusserver.api.direct_local import LocalDirectBackend
from tusserver.api.direct_state import (
    DirectRecords,
    DirectStatus,
    DirectUpload,
    Kind,
)
from tusserver.core.listener import NullListener, UploadListener
from tusserver.core.uploads import UploadService
from tusserver.edge.jsonapi import ApiError
from tusserver.models import UploadInfo, new_upload_id
from tusserver.security.admission import check_content_type, role_max_size
from tusserver.security.principal import Principal
from tusserver.settings import Settings
from tusserver.state.base import AlreadyExists
from tusserver.storage.parts import MAX_OBJECT, MAX_PART

log = logging.getLogger("tusserver.direct")

# Part URLs listed in the create answer; the rest are signed on request (parts/{n}), so a
# 10,000-part upload does not cost 10,000 signatures (and a megabyte of JSON) up front.
MAX_LISTED_PARTS = 1000
# The admin's one-request upload (``POST /api/v1/uploads/direct``).
MAX_SMALL = 10 * 1024 * 1024


@dataclass(frozen=True)
class NewUpload:
    filename: str
    content_type: str
    size: int | None
    key_prefix: str | None = None
    part_size: int | None = None


class DirectUploads:
    def __init__(
        self,
        *,
        settings: Settings,
        uploads: UploadService,
        records: DirectRecords,
        backend: DirectBackend,
        catalog: Catalog | None,
        clock: Callable[[], float],
        events: UploadListener | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.records = records
        self._uploads = uploads
        self._catalog = catalog
        self._clock = clock
        self._events: UploadListener = events if events is not None else NullListener()

    @property
    def catalog(self) -> Catalog | None:
        return self._catalog

    def now(self) -> float:
        return self._clock()

    # -- creation ------------------------------------------------------------------------

    def _limit(self, principal: Principal, kind: Kind) -> int:
        own = role_max_size(self.settings, principal)
        ceiling = MAX_PART if kind == "single" else MAX_OBJECT  # S3: 5 GiB per PUT
        return min(own, ceiling) if own else ceiling

    async def _create(
        self, principal: Principal, kind: Kind, new: NewUpload, *, start: bool = True
    ) -> DirectUpload:
        check_content_type(self.settings, new.content_type)
        limit = self._limit(principal, kind)
        if new.size is not None and new.size > limit:
            raise errors.SizeExceeded(f"the file may be at most {limit} bytes")
        part_size, num_parts = None, 0
        if kind == "multipart":
            assert new.size is not None
            try:
                plan = plan_multipart(
                    new.size,
                    requested=new.part_size,
                    preferred=self.settings.s3_part_size,
                    fixed=self.settings.s3_fixed_part_size,
                )
            except ValueError as exc:
                raise errors.ValidationFailed(str(exc)) from None
            part_size, num_parts = plan.part_size, plan.num_parts
        now = self.now()
        upload = DirectUpload(
            id=new_upload_id(),
            kind=kind,
            owner=principal.user_id,
            filename=new.filename,
            content_type=new.content_type,
            size=new.size,
            status=DirectStatus.PENDING,
            created_at=now,
            expires_at=now + self.settings.direct_expiration,
            part_size=part_size,
            num_parts=num_parts,
            max_size=new.size if new.size is not None else limit,
            key_prefix=new.key_prefix,
        )
        if start:
            upload = await self.backend.start(upload)
        try:
            await self.records.create(upload)
        except BaseException:
            if start:
                await self.backend.discard(upload)
            raise
        log.info("direct.created", extra={"upload_id": upload.id, "kind": kind})
        await self._events.upload_created(self._info(upload))
        return upload

    def _info(
        self, upload: DirectUpload, *, finished_at: float | None = None, sha256: str | None = None
    ) -> UploadInfo:
        """The upload as listeners (and the catalog) know uploads: complete once finished."""
        metadata: dict[str, str | None] = {
            "filename": upload.filename,
            "filetype": upload.content_type,
        }
        if upload.key_prefix:
            metadata["key_prefix"] = upload.key_prefix
        return UploadInfo(
            id=upload.id,
            length=upload.size,
            offset=upload.size if finished_at is not None and upload.size is not None else 0,
            metadata=metadata,
            owner=upload.owner,
            created_at=upload.created_at,
            expires_at=None if finished_at is not None else upload.expires_at,
            finished_at=finished_at,
            sha256=sha256,
        )

    async def create_single(
        self, principal: Principal, new: NewUpload, *, base_url: str
    ) -> tuple[DirectUpload, Target]:
        upload = await self._create(principal, "single", new)
        return upload, await self.target(upload, 0, base_url=base_url)

    async def create_multipart(
        self, principal: Principal, new: NewUpload, *, base_url: str
    ) -> tuple[DirectUpload, list[Target]]:
        upload = await self._create(principal, "multipart", new)
        listed = min(upload.num_parts, MAX_LISTED_PARTS)
        targets = [await self.target(upload, n, base_url=base_url) for n in range(1, listed + 1)]
        return upload, targets

    def url_expiry(self, upload: DirectUpload) -> int:
        # Never outlives the upload itself.
        return int(min(self.now() + self.settings.direct_url_ttl, upload.expires_at))

    async def target(self, upload: DirectUpload, part_number: int, *, base_url: str) -> Target:
        if upload.kind == "multipart" and not 1 <= part_number <= upload.num_parts:
            raise errors.ValidationFailed(f"part_number must be within [1, {upload.num_parts}]")
        return await self.backend.target(
            upload, part_number, expires_at=self.url_expiry(upload), base_url=base_url
        )

    # -- reading -------------------------------------------------------------------------

    async def load(self, upload_id: str, *, owner: str | None, kind: Kind) -> DirectUpload:
        """The upload, if the caller may see it: missing, someone else's, of the other kind
        or expired unfinished are all "not found" (existence is not leaked)."""
        upload = await self.records.get(upload_id)
        if (
            upload is None
            or upload.kind != kind
            or (owner is not None and upload.owner != owner)
            or self._expired(upload)
        ):
            raise errors.NotFound()
        return upload

    def _expired(self, upload: DirectUpload) -> bool:
        # Stored bytes are never "expired": a complete retried after an outage may finish.
        return upload.active and not upload.stored and upload.expires_at <= self.now()

    async def progress(self, upload: DirectUpload) -> tuple[DirectUpload, list[int]]:
        """The parts storage holds; a pending upload with parts becomes ``uploading``."""
        if not upload.active:
            return upload, []
        received = await self.backend.received_parts(upload)
        if received and upload.status is DirectStatus.PENDING:
            upload = await self._mark_uploading(upload)
        return upload, received

    async def _mark_uploading(self, upload: DirectUpload) -> DirectUpload:
        # Best effort and never waits: a complete holding the lock decides the status.
        with contextlib.suppress(errors.Locked):
            async with self._uploads.locked(upload.id, request_release=False, wait=0):
                current = await self.records.get(upload.id)
                if current is not None and current.status is DirectStatus.PENDING:
                    upload = current.replace(status=DirectStatus.UPLOADING)
                    await self.records.put(upload)
        return upload

    async def file_record(self, upload: DirectUpload) -> FileRecord | None:
        if self._catalog is None:
            return None
        return await self._catalog.get(upload.id, owner=None)

    # -- local parts ---------------------------------------------------------------------

    async def accept_part(
        self,
        token: str,
        *,
        content_type: str | None,
        declared_length: int | None,
        body: AsyncIterable[bytes],
    ) -> str:
        """Store a part PUT to our signed URL (local storage); return its ETag (MD5 hex)."""
        backend = self.backend
        if not isinstance(backend, LocalDirectBackend):
            raise errors.NotFound()
        claim = backend.signer.verify(token, now=self.now())
        upload = await self.records.get(claim.upload_id)
        if upload is None or self._expired(upload):
            raise errors.NotFound()
        if not upload.active or upload.stored:
            raise errors.InvalidUploadState(f"the upload is {upload.status.value}")
        single = upload.kind == "single"
        # Only numbers we signed for this upload; checked anyway, as the number names a file.
        if single != (claim.part_number == 0) or claim.part_number > upload.num_parts:
            raise errors.SignatureInvalid()
        if single:
            # As S3 does for a presigned PUT: the type is part of what was signed.
            given = (content_type or "").split(";", 1)[0].strip().lower()
            if given != (claim.content_type or "").lower():
                raise errors.ContentTypeMismatch()
            limit = upload.max_size or MAX_PART
            exact = False
        else:
            limit = upload.expected_part_size(claim.part_number) or 0
            exact = True
        if declared_length is not None and declared_length > limit:
            raise errors.PayloadTooLarge(f"this part may hold at most {limit} bytes")
        try:
            _, etag = await backend.receive(
                upload, claim.part_number, body, limit=limit, exact=exact
            )
        except FileNotFoundError:
            # Completed or aborted while the body arrived.
            raise errors.InvalidUploadState("the upload is no longer accepting parts") from None
        if upload.status is DirectStatus.PENDING:
            await self._mark_uploading(upload)
        return etag

    # -- finishing -----------------------------------------------------------------------

    async def complete(
        self,
        upload_id: str,
        *,
        owner: str | None,
        kind: Kind,
        parts: Sequence[CompletedPart] = (),
    ) -> DirectUpload:
        # Ownership before the lock: a refused caller must neither wait on nor hold the lock
        # of an upload it may not see (a 423 would tell it the upload exists).
        await self.load(upload_id, owner=owner, kind=kind)
        async with self._uploads.locked(upload_id, request_release=False):
            upload = await self.load(upload_id, owner=owner, kind=kind)
            if upload.status is DirectStatus.COMPLETED:
                return upload  # a retried complete: the same answer
            if not upload.active:
                raise errors.InvalidUploadState(f"the upload is {upload.status.value}")
            if kind == "multipart" and not upload.stored:
                problems = check_part_list(parts, upload.num_parts)
                if problems:
                    raise ApiError(errors.ValidationFailed("invalid part list"), problems)
            sha256: str | None = None
            if not upload.stored:
                upload, sha256 = await self._store_final(upload, parts)
            return await self._record(upload, sha256)

    async def _store_final(
        self, upload: DirectUpload, parts: Sequence[CompletedPart]
    ) -> tuple[DirectUpload, str | None]:
        try:
            stored = await self.backend.finish(upload, parts)
        except PartsRejected as exc:
            raise ApiError(errors.ValidationFailed(str(exc))) from None
        ceiling = upload.max_size or MAX_OBJECT
        wanted = upload.size
        if (wanted is not None and stored.size != wanted) or stored.size > ceiling:
            # The object is whole but wrong: it must not count, nor linger.
            await self.backend.delete_object(upload)
            failed = upload.replace(status=DirectStatus.FAILED, finished_at=self.now())
            await self.records.put(failed)
            log.warning(
                "direct.failed",
                extra={"upload_id": upload.id, "size": stored.size, "expected": wanted},
            )
            expected = f"{wanted} bytes" if wanted is not None else f"at most {ceiling} bytes"
            raise errors.SizeMismatch(f"storage holds {stored.size} bytes, expected {expected}")
        upload = upload.replace(stored=True, size=stored.size)
        await self.records.put(upload)
        return upload, stored.sha256

    async def _record(self, upload: DirectUpload, sha256: str | None) -> DirectUpload:
        """The stored object becomes a finished upload: in the upload state, then the
        catalog, then the record says so. Each step may repeat after a failure."""
        assert upload.size is not None
        finished_at = upload.finished_at or self.now()
        info = self._info(upload, finished_at=finished_at, sha256=sha256)
        outbox = self._uploads.ctx.outbox
        if self._catalog is not None and outbox is not None:
            # A failed record fails this complete (a retry records it); the mark also lets
            # the sweep record it if the client never comes back.
            await outbox.add(info.id)
        with contextlib.suppress(AlreadyExists):
            await self._uploads.ctx.state.create(info)
        if self._catalog is not None:
            await self._catalog.record(info)
        done = upload.replace(status=DirectStatus.COMPLETED, finished_at=finished_at)
        await self.records.put(done)
        log.info("direct.completed", extra={"upload_id": upload.id, "size": upload.size})
        # After the record says completed: a retried complete returns early, so the event
        # goes out once (a crash right here loses it, as it would for a tus upload).
        await self._events.upload_finished(info)
        return done

    async def abort(self, upload_id: str, *, owner: str | None, kind: Kind) -> DirectUpload:
        await self.load(upload_id, owner=owner, kind=kind)  # before the lock, as in complete
        async with self._uploads.locked(upload_id, request_release=False):
            upload = await self.load(upload_id, owner=owner, kind=kind)
            if upload.status is DirectStatus.ABORTED:
                return upload
            if upload.status is DirectStatus.COMPLETED or upload.stored:
                raise errors.InvalidUploadState("the upload is complete; delete the file instead")
            await self.backend.discard(upload)
            aborted = upload.replace(status=DirectStatus.ABORTED, finished_at=self.now())
            await self.records.put(aborted)
            log.info("direct.aborted", extra={"upload_id": upload.id})
        await self._events.upload_terminated(self._info(upload))
        return aborted

    async def store_small(self, principal: Principal, new: NewUpload, data: bytes) -> DirectUpload:
        """The admin's one-request upload: stored and recorded at once."""
        # Nothing to prepare in storage: the object is written whole, right away.
        upload = await self._create(principal, "single", new, start=False)
        async with self._uploads.locked(upload.id, request_release=False):
            try:
                await self.backend.store(upload, data)
                upload = upload.replace(stored=True, size=len(data))
                await self.records.put(upload)
            except BaseException:
                # The client got no id (a full disk fails either write): leave nothing.
                await self.backend.delete_object(upload)
                await self.records.delete(upload.id)
                raise
            return await self._record(upload, hashlib.sha256(data).hexdigest())

    # -- sweeping ------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Abort expired unfinished uploads (their parts go), drop old records, and remove
        parts no record knows (left by a crash, or a record that expired in Redis)."""
        now = self.now()
        aborted = 0
        async for upload in self.records.expired(now):
            if upload.stored:
                continue  # bytes in place: a retried complete finishes it
            try:
                async with self._uploads.locked(upload.id, request_release=False, wait=0):
                    current = await self.records.get(upload.id)
                    if current is None or not self._expired(current):
                        continue
                    await self.backend.discard(current)
                    await self.records.put(
                        current.replace(status=DirectStatus.ABORTED, finished_at=now)
                    )
                    aborted += 1
                    log.info("direct.expired", extra={"upload_id": upload.id})
                    await self._events.upload_terminated(self._info(current), reason="expired")
            except errors.Locked:
                continue
        pruned = await self.records.prune(now)
        orphans = await self.backend.sweep_orphans(self._known, now - self.settings.orphan_grace)
        return {"aborted": aborted, "pruned": pruned, "orphans_removed": orphans}

    async def _known(self, upload_id: str) -> bool:
        return await self.records.get(upload_id) is not None
