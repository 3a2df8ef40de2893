"""Upload state transitions: create, append, declare length, finish, concatenate, terminate.

Handlers translate HTTP into these calls; the sweeper and the REST routes reuse them. The rule
that keeps uploads safe lives here: state (the offset) only ever advances to bytes the store
reports durable, and a chunk whose checksum fails is rolled back whole.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tusserver import errors
from tusserver.core.context import TusContext
from tusserver.core.digests import ContentDigests
from tusserver.core.listener import TerminationReason
from tusserver.core.spool import Spool
from tusserver.edge.body import BodyEnd, BodyReader
from tusserver.models import ConcatKind, UploadInfo, is_valid_upload_id, new_upload_id
from tusserver.state.base import AlreadyExists, LockHandle
from tusserver.tus.protocol import (
    MAX_INT,
    Checksum,
    ConcatRequest,
)

log = logging.getLogger("tusserver.upload")

# Progress events per upload are at most this many seconds apart.
PROGRESS_INTERVAL = 1.0
# Uploads whose last progress time is remembered; abandoned ones age out of this bound.
_PROGRESS_TRACKED = 10_000
# Termination log events and the reason listeners hear.
_REASONS: dict[str, TerminationReason] = {
    "upload.terminated": "terminated",
    "upload.expired": "expired",
    "upload.purged": "purged",
}


def metadata_size(metadata: Mapping[str, str | None], metadata_raw: str | None) -> int:
    """Bytes of the metadata as an ``Upload-Metadata`` header carries it (base64 values),
    or of the raw header if that is longer: what a creation stores and HEAD echoes."""
    encoded = 0
    for key, value in metadata.items():
        raw_value = (value or "").encode("utf-8", "surrogatepass")
        encoded += len(key.encode("utf-8", "surrogatepass")) + 2 + -(-len(raw_value) // 3) * 4
    return max(encoded, len(metadata_raw or ""))


def check_metadata_size(
    limit: int, metadata: Mapping[str, str | None], metadata_raw: str | None = None
) -> None:
    """Refuse metadata over ``TUS_MAX_METADATA_SIZE``. The HTTP layer bounds a request's
    headers only when ``tusserver serve`` runs it; this holds under any ASGI server, and for
    metadata that does not come in a header (the JSON API, a pre-create hook's additions)."""
    size = metadata_size(metadata, metadata_raw)
    if size > limit:
        raise errors.MetadataTooLarge(
            f"Upload-Metadata holds {size} bytes; at most {limit} are accepted"
        )


@dataclass(frozen=True)
class WriteResult:
    info: UploadInfo
    end: BodyEnd
    checksum_failed: bool = False


class UploadService:
    def __init__(self, ctx: TusContext, *, digests: ContentDigests | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.features = ctx.composer.features(expiration=ctx.settings.expiration > 0)
        # Spelled once: OPTIONS and every preflight answer with it.
        self.extensions = self.features.extensions
        # The running sha256 costs about 1 s of CPU per GiB (in a worker thread); only the
        # catalog uses it (and reads its heads: the runtime hands both the same one).
        self.digests = digests or ContentDigests(enabled=ctx.settings.catalog)
        # upload id -> clock time of its last progress event, oldest first.
        self._progress_at: dict[str, float] = {}
        self.shutting_down = False
        self._held: set[LockHandle] = set()

    # -- reading -------------------------------------------------------------------------

    def owned_by(self, info: UploadInfo, owner: str | None) -> bool:
        """Whether a caller scoped to ``owner`` may see ``info``; None means any (admins).
        Uploads recorded before owners were (no owner) belong to the anonymous user."""
        return owner is None or (info.owner or self.settings.anonymous_owner) == owner

    @property
    def expires(self) -> bool:
        return self.features.expiration

    def _expiry(self) -> float | None:
        return self.ctx.clock() + self.settings.expiration if self.expires else None

    def is_expired(self, info: UploadInfo) -> bool:
        return (
            self.expires
            and not info.is_complete
            and info.expires_at is not None
            and info.expires_at <= self.ctx.clock()
        )

    async def get(self, upload_id: str, *, owner: str | None) -> UploadInfo:
        """Read an upload without its lock (downloads). Missing, expired or someone else's
        (``owner`` given and different) -> NotFound."""
        if not is_valid_upload_id(upload_id):
            raise errors.NotFound()
        info = await self._fetch(upload_id)
        if info is None or self.is_expired(info) or not self.owned_by(info, owner):
            raise errors.NotFound()
        return info

    async def exists(self, upload_id: str) -> bool:
        """Whether any state knows this upload, rebuilt from storage if need be (the orphan
        sweep asks before it deletes anything)."""
        return is_valid_upload_id(upload_id) and await self._fetch(upload_id) is not None

    async def _fetch(self, upload_id: str) -> UploadInfo | None:
        """The upload's record; if the state store lost it (Redis flushed or failed over),
        rebuilt from what storage holds, so no acknowledged byte is lost with it."""
        info = await self.ctx.state.get(upload_id)
        recoverer = self.ctx.composer.recoverer
        if info is not None or recoverer is None:
            return info
        recovered = await recoverer.recover(upload_id)
        if recovered is None:
            return None
        try:
            await self.ctx.state.create(recovered)
        except AlreadyExists:  # another request rebuilt it first; theirs is as good
            return await self.ctx.state.get(upload_id)
        log.warning("upload.state_recovered", extra={"upload_id": upload_id})
        return recovered

    @asynccontextmanager
    async def locked(
        self, upload_id: str, *, request_release: bool = True, wait: float | None = None
    ) -> AsyncIterator[LockHandle]:
        if not is_valid_upload_id(upload_id):
            raise errors.NotFound()
        async with self.ctx.locker.lock(
            upload_id,
            wait=self.settings.lock_wait if wait is None else wait,
            request_release=request_release,
        ) as handle:
            self._held.add(handle)
            if self.shutting_down:
                handle.request_release()
            try:
                yield handle
            finally:
                self._held.discard(handle)

    async def check_owner(self, upload_id: str, *, owner: str | None) -> None:
        """NotFound unless the upload exists and a caller scoped to ``owner`` may act on it.

        Called before a request touches the upload's lock: taking a held lock asks its holder
        (a running PATCH) to stop, so a caller refused only afterwards could still cut off the
        owner's upload. No lock and no change, except rebuilding lost state as ``get`` does.
        Expiry is left to ``load_locked``, which removes an expired upload under the lock.
        """
        if not is_valid_upload_id(upload_id):
            raise errors.NotFound()
        info = await self._fetch(upload_id)
        if info is None or not self.owned_by(info, owner):
            raise errors.NotFound()

    @asynccontextmanager
    async def locked_for(
        self, upload_id: str, *, owner: str | None, writing: bool = False
    ) -> AsyncIterator[LockHandle]:
        """The lock of an upload a request acts on, taken only once ``check_owner`` passed:
        ownership first, then the lock (and its release request), then ``load_locked``."""
        await self.check_owner(upload_id, owner=owner)
        held = self.writing(upload_id) if writing else self.locked(upload_id)
        async with held as handle:
            yield handle

    @asynccontextmanager
    async def writing(self, upload_id: str) -> AsyncIterator[LockHandle]:
        """``locked`` for a request that writes bytes (PATCH, creation-with-upload), counted
        in the active-uploads gauge while it holds the lock."""
        async with self.locked(upload_id) as handle:
            with self.ctx.metrics.active_upload():
                yield handle

    def begin_shutdown(self) -> None:
        """Ask every request holding an upload to persist what arrived and answer now.

        Called when the process is told to stop (SIGTERM): each running PATCH ends its body
        as if another request had asked for the upload, records the bytes it stored and
        answers 503, so the client resumes elsewhere and the process exits in bounded time.
        """
        self.shutting_down = True
        for handle in list(self._held):
            handle.request_release()

    async def load_locked(self, upload_id: str, *, owner: str | None) -> UploadInfo:
        """Load an upload while holding its lock.

        Expiry is enforced here, at request time, even before the sweeper runs
        (docs/protocol.md, "Expiration"), and the offset is reconciled with what storage really
        holds after a crash. Another user's upload is NotFound, exactly like a missing one:
        existence is not leaked.
        """
        info = await self._fetch(upload_id)
        if info is None or not self.owned_by(info, owner):
            raise errors.NotFound()
        if self.is_expired(info):
            await self.terminate(info, event="upload.expired")
            raise errors.NotFound()
        reconciler = self.ctx.composer.reconciler
        if reconciler is not None and not info.is_complete and not info.is_final:
            checked = await reconciler.reconcile(info)
            if checked.offset != info.offset:
                await self.ctx.state.update(checked)
                info = checked
        return info

    # -- creation ------------------------------------------------------------------------

    async def create(
        self,
        *,
        length: int | None,
        metadata: Mapping[str, str | None],
        metadata_raw: str | None,
        concat: ConcatRequest | None = None,
        concat_raw: str | None = None,
        owner: str | None = None,
        announce: bool = True,
    ) -> UploadInfo:
        """Create an upload. With ``announce=False`` listeners hear of it only when the caller
        calls ``announce_created`` (a creation whose data may still fail its checksum)."""
        check_metadata_size(self.settings.max_metadata_size, metadata, metadata_raw)
        if concat is not None and concat.kind is ConcatKind.FINAL:
            return await self._create_final(concat, concat_raw, metadata, metadata_raw, owner)
        max_size = self.settings.max_size
        if length is not None and max_size and length > max_size:
            raise errors.SizeExceeded(f"Upload-Length exceeds the maximum size of {max_size}")
        info = UploadInfo(
            id=new_upload_id(),
            length=length,
            metadata=dict(metadata),
            metadata_raw=metadata_raw,
            concat=concat.kind if concat is not None else ConcatKind.NONE,
            owner=owner,
            created_at=self.ctx.clock(),
            expires_at=self._expiry(),
        )
        info = await self._store_new(info, announce=announce)
        if info.is_complete:
            # An empty upload is complete at creation; clients send no PATCH
            # (docs/protocol.md, "Creation").
            info = await self.finish(info)
        return info

    async def _store_new(self, info: UploadInfo, *, announce: bool = True) -> UploadInfo:
        info = await self.ctx.composer.core.create(info)
        try:
            await self.ctx.state.create(info)
        except AlreadyExists:  # 128 random bits colliding means a broken RNG; never overwrite
            raise errors.TusError("upload id collision") from None
        except Exception:
            # A full disk (or a state outage) after the bytes' file exists: the client never
            # hears of this upload, so nothing of it may stay behind.
            await self._discard_new(info)
            raise
        log.info("upload.created", extra={"upload_id": info.id, "length": info.length})
        if announce:
            await self.ctx.listener.upload_created(info)
        else:
            # No progress for an upload listeners have not heard of yet.
            self._note_progress(info.id, math.inf)
        return info

    async def _discard_new(self, info: UploadInfo) -> None:
        """Remove every trace of an upload whose creation failed, quietly: listeners never
        heard of it. The state record goes too: a create that failed late (its directory
        sync, say) may have written it."""
        try:
            await self.ctx.state.delete(info.id)
            terminater = self.ctx.composer.terminater
            if terminater is not None:
                await terminater.terminate(info)
        except Exception:
            # The orphan sweep removes what is left; the caller raises the original error.
            log.warning("upload.discard_failed", extra={"upload_id": info.id}, exc_info=True)
        self._progress_at.pop(info.id, None)

    async def abandon_created(self, info: UploadInfo) -> None:
        """Undo a creation that failed after the upload existed (creation-with-upload that
        ran out of disk): the client got no Location, so it would only ever be an orphan."""
        announced = self._progress_at.get(info.id) != math.inf
        await self._discard_new(info)
        log.info("upload.abandoned", extra={"upload_id": info.id})
        if announced:
            await self.ctx.listener.upload_terminated(info, reason="terminated")

    async def announce_created(self, info: UploadInfo) -> None:
        self._progress_at.pop(info.id, None)
        await self.ctx.listener.upload_created(info)

    async def _create_final(
        self,
        concat: ConcatRequest,
        concat_raw: str | None,
        metadata: Mapping[str, str | None],
        metadata_raw: str | None,
        owner: str | None,
    ) -> UploadInfo:
        if self.ctx.composer.concater is None:
            raise errors.ConcatUnsupported()
        partials: list[UploadInfo] = []
        for partial_id in concat.partial_ids:
            partial = await self.ctx.state.get(partial_id)
            # Someone else's partial "does not exist": concatenating it would copy their bytes.
            if partial is None or self.is_expired(partial) or not self.owned_by(partial, owner):
                raise errors.InvalidConcat(f"partial upload {partial_id} does not exist")
            if not partial.is_partial:
                raise errors.InvalidConcat(f"upload {partial_id} is not a partial upload")
            partials.append(partial)
        length = self._total_length(partials)
        limit = self._length_limit()
        if length is not None and length > limit:
            raise errors.SizeExceeded(f"the partials exceed the maximum size of {limit}")
        final = UploadInfo(
            id=new_upload_id(),
            length=length,
            metadata=dict(metadata),
            metadata_raw=metadata_raw,
            concat=ConcatKind.FINAL,
            partials=concat.partial_ids,
            concat_raw=concat_raw,
            owner=owner,
            created_at=self.ctx.clock(),
            expires_at=self._expiry(),
        )
        final = await self._store_new(final)
        try:
            # Register before re-reading the partials: a partial that finishes concurrently
            # either sees this registration or is seen complete below, so the final is never
            # stranded.
            for partial_id in dict.fromkeys(concat.partial_ids):
                await self.ctx.state.add_waiter(partial_id, final.id)
            async with self.locked(final.id, request_release=False):
                return await self._assemble_locked(final.id)
        except Exception:
            # The client gets an error and no Location: the final must not linger (its
            # half-copied bytes least of all, on a full disk). A stale waiter entry left on
            # a partial finds no final and is skipped.
            await self.abandon_created(final)
            raise

    def _length_limit(self) -> int:
        # Without TUS_MAX_SIZE the sum of partials is still bounded to what every store and
        # every client can represent as an offset (a signed 64-bit integer).
        return self.settings.max_size or MAX_INT

    @staticmethod
    def _total_length(partials: list[UploadInfo]) -> int | None:
        lengths = [p.length for p in partials]
        if any(length is None for length in lengths):
            return None
        return sum(length for length in lengths if length is not None)

    # -- appending -----------------------------------------------------------------------

    async def write(
        self,
        info: UploadInfo,
        reader: BodyReader,
        *,
        checksum: Checksum | None = None,
        declared_length: int | None = None,
    ) -> WriteResult:
        """Append the body at ``info.offset``; the caller holds the lock and validated it.

        Without a checksum, durable progress is recorded as it happens (a crash loses at most
        one checkpoint) and an interrupted body keeps what arrived. With a checksum, the chunk
        is all or nothing: nothing is recorded until it verifies, and a mismatch or a cut-off
        body rolls the bytes back (docs/protocol.md, "Checksums").
        """
        current = info

        async def record(offset: int) -> None:
            nonlocal current
            current = current.replace(offset=offset, expires_at=self._expiry())
            await self.ctx.state.update(current)
            await self._progress(current)

        truncater = self.ctx.composer.truncater
        if checksum is not None and truncater is None:
            try:
                return await self._write_spooled(info, reader, checksum, declared_length)
            except OSError as exc:  # the spool's disk is full: nothing was stored yet
                full = errors.storage_full(exc)
                if full is None:
                    raise
                raise full from None
        feed = self.digests.start(info.id, info.offset)
        chunks = reader.chunks() if feed is None else feed.wrap(reader.chunks())
        try:
            stored = await self.ctx.composer.core.write(
                info, chunks, None if checksum is not None else record
            )
        except FileNotFoundError:
            raise errors.NotFound() from None
        except Exception as exc:
            full = errors.storage_full(exc)
            if full is None:
                raise
            if checksum is not None and truncater is not None:
                # All or nothing: what fitted before the disk filled is not verified.
                await truncater.truncate(info, info.offset)
            # Without a checksum the store reported what fitted (durably) as progress.
            raise full from None
        end = reader.end or BodyEnd.COMPLETE
        if checksum is not None and not self._verified(reader, checksum):
            assert truncater is not None
            await truncater.truncate(info, info.offset)
            # The length is not declared either (docs/protocol.md, "Checksums"). The running hash
            # saw the rolled-back bytes, so it is dropped (start() already took it out).
            return WriteResult(info, end, checksum_failed=end is BodyEnd.COMPLETE)
        await self.digests.commit(info.id, feed, stored)
        self.ctx.metrics.bytes_received(stored)
        return await self._record_write(current, info.offset + stored, end, declared_length)

    @staticmethod
    def _verified(reader: BodyReader, checksum: Checksum) -> bool:
        return (
            reader.end is BodyEnd.COMPLETE
            and reader.hasher is not None
            and reader.hasher.digest() == checksum.digest
        )

    async def _write_spooled(
        self,
        info: UploadInfo,
        reader: BodyReader,
        checksum: Checksum,
        declared_length: int | None,
    ) -> WriteResult:
        """Checksum on a store that cannot roll back: verify on local disk, then store."""
        async with Spool(self.settings.data_dir / "spool") as spool:
            await spool.fill(reader.chunks())
            end = reader.end or BodyEnd.COMPLETE
            if not self._verified(reader, checksum):
                return WriteResult(info, end, checksum_failed=end is BodyEnd.COMPLETE)
            feed = self.digests.start(info.id, info.offset)
            chunks = spool.chunks() if feed is None else feed.wrap(spool.chunks())
            try:
                stored = await self.ctx.composer.core.write(info, chunks)
            except FileNotFoundError:
                raise errors.NotFound() from None
            await self.digests.commit(info.id, feed, stored)
        self.ctx.metrics.bytes_received(stored)
        return await self._record_write(info, info.offset + stored, end, declared_length)

    async def _record_write(
        self, current: UploadInfo, offset: int, end: BodyEnd, declared_length: int | None
    ) -> WriteResult:
        updated = current.replace(offset=offset, expires_at=self._expiry())
        if declared_length is not None and updated.length is None:
            updated = await self._declare(updated, declared_length)
        if not (updated.is_complete and self.ctx.composer.finish_is_free):
            # A complete upload on a store whose finish cannot fail (local: the bytes are
            # already in place) is recorded once, by ``finish``, which the caller runs next:
            # the offset is acknowledged only after that. Elsewhere the offset is recorded
            # now, so a failed finish (S3 down) never loses track of stored bytes.
            await self.ctx.state.update(updated)
        log.info(
            "upload.chunk_written",
            extra={"upload_id": updated.id, "offset": updated.offset},
        )
        await self._progress(updated)
        return WriteResult(updated, end)

    async def _progress(self, info: UploadInfo) -> None:
        """Tell listeners about stored bytes, at most every PROGRESS_INTERVAL per upload.

        Called at the store's checkpoints and when a write ends, so a PATCH shorter than the
        interval still reports once. A complete upload is left to ``upload_finished``.
        """
        if info.is_complete:
            return
        now = self.ctx.clock()
        last = self._progress_at.pop(info.id, None)
        if last is not None and now - last < PROGRESS_INTERVAL:
            self._progress_at[info.id] = last
            return
        self._note_progress(info.id, now)
        await self.ctx.listener.upload_progress(info)

    def _note_progress(self, upload_id: str, when: float) -> None:
        # Re-inserted last, so the dict stays oldest first and the oldest entry (an upload
        # abandoned long ago) is the one dropped past the bound, whoever inserts.
        self._progress_at.pop(upload_id, None)
        self._progress_at[upload_id] = when
        while len(self._progress_at) > _PROGRESS_TRACKED:
            del self._progress_at[next(iter(self._progress_at))]

    async def declare_length(self, info: UploadInfo, length: int) -> UploadInfo:
        """Set a deferred length without writing (an empty final PATCH).

        See (docs/protocol.md, "Deferred length").
        """
        updated = await self._declare(info, length)
        await self.ctx.state.update(updated)
        return updated

    async def _declare(self, info: UploadInfo, length: int) -> UploadInfo:
        updated = info.replace(length=length)
        deferrer = self.ctx.composer.length_deferrer
        if deferrer is not None:
            updated = await deferrer.declare_length(updated)
        return updated

    # -- completion ----------------------------------------------------------------------

    async def finish(self, info: UploadInfo) -> UploadInfo:
        """Complete an upload whose offset reached its length. Safe to call again."""
        try:
            info = await self.ctx.composer.core.finish(info)
        except FileNotFoundError:  # its storage was removed under us (terminated)
            raise errors.NotFound() from None
        if not info.is_partial and self.ctx.outbox is not None:
            # Before the finished state is written (and so before any client can be told):
            # if recording fails or this process dies, the sweep still finds the upload.
            await self.ctx.outbox.add(info.id)
        if info.finished_at is None:
            assert info.length is not None
            sha256 = info.sha256 or self.digests.finish(info.id, info.length)
            info = info.replace(finished_at=self.ctx.clock(), expires_at=None, sha256=sha256)
            await self.ctx.state.update(info)
        log.info("upload.finished", extra={"upload_id": info.id, "length": info.length})
        self._progress_at.pop(info.id, None)
        if info.is_partial:
            # A finished partial is not a finished file (docs/protocol.md, "Concatenation"); it may
            # complete finals.
            for final_id in await self.ctx.state.waiters(info.id):
                try:
                    async with self.locked(final_id, request_release=False):
                        await self._assemble_locked(final_id)
                except errors.NotFound:
                    continue
                except (errors.Locked, errors.InsufficientStorage):
                    # The final's own HEAD assembles it when it gets the lock (or room on
                    # disk): this partial is complete either way.
                    log.warning("upload.assembly_deferred", extra={"upload_id": final_id})
        else:
            await self.ctx.listener.upload_finished(info)
        return info

    async def _assemble_locked(self, final_id: str) -> UploadInfo:
        """Concatenate a final upload if all its partials are complete (lock held)."""
        final = await self.ctx.state.get(final_id)
        if final is None:
            raise errors.NotFound()
        if final.finished_at is not None:
            # Keyed on finished_at, not offset: a final over empty partials has length 0 and
            # looks complete by arithmetic before it was ever assembled.
            return final
        partials: list[UploadInfo] = []
        for partial_id in final.partials:
            partial = await self.ctx.state.get(partial_id)
            if partial is None:
                return final  # a partial vanished; the final can only expire now
            partials.append(partial)
        length = self._total_length(partials)
        if length is not None and length > self._length_limit():
            # Partials whose lengths were deferred and declared later: the final can never
            # be assembled, so it stays unfinished and expires.
            log.warning("upload.final_too_large", extra={"upload_id": final.id})
            return final
        if length is not None and final.length is None:
            final = final.replace(length=length)
            await self.ctx.state.update(final)
        if not all(p.is_complete for p in partials):
            return final
        assert length is not None
        concater = self.ctx.composer.concater
        assert concater is not None
        await concater.concat(final, partials)
        final = final.replace(length=length, offset=length)
        await self.ctx.state.update(final)
        return await self.finish(final)

    async def assemble_if_ready(self, final: UploadInfo) -> UploadInfo:
        """For a HEAD on a pending final (lock held): assemble now if a trigger was missed."""
        if not final.is_final or final.finished_at is not None:
            return final
        return await self._assemble_locked(final.id)

    # -- removal -------------------------------------------------------------------------

    async def terminate(
        self, info: UploadInfo, *, event: str = "upload.terminated", announce: bool = True
    ) -> None:
        """Remove an upload: state first, so clients see it gone even if byte removal fails.

        ``event`` is the log event, and tells listeners why: ``upload.expired`` -> reason
        ``expired``, ``upload.purged`` -> ``purged``, anything else -> ``terminated``.
        """
        await self.ctx.state.delete(info.id)
        terminater = self.ctx.composer.terminater
        if terminater is not None:
            await terminater.terminate(info)
        log.info(event, extra={"upload_id": info.id})
        self._progress_at.pop(info.id, None)
        # Its running hash holds up to HEAD_BYTES of the upload: not kept for a dead upload.
        self.digests.discard(info.id)
        if announce:
            reason = _REASONS.get(event, "terminated")
            await self.ctx.listener.upload_terminated(info, reason=reason)
