"""The S3 write path: a PATCH body cut into parts and uploaded while it still arrives.

This module owns the write path's promises:

* incoming bytes are cut into parts of the size planned at creation (``parts.plan_part_size``)
  and uploaded while the body still arrives, bounded per upload and per process;
* a part fills in a ``PartBuffer``: in memory up to ``spool_memory``, then in an anonymous
  temporary file under ``spool_dir``, which is the body S3 receives. Memory per upload is thus
  a small constant (about ``spool_memory`` + one 1 MiB write batch) whatever the part size;
  local disk holds about part size * (parts in flight + 2) per upload, and a part's file is
  closed (so freed) as soon as its upload ends, however it ends;
* bytes that do not fill a part (S3 refuses non-final parts below 5 MiB) are stored as the tail
  object, which the next write (on any instance) prepends; no part below 5 MiB is ever made
  except the last one, which is uploaded as soon as the body ends the upload (or by ``finish``
  from the tail);
* ``on_progress`` only hears of bytes that are durable: the contiguous prefix of uploaded parts,
  or a stored tail. A tail is deleted before progress is reported past its first byte, so
  storage alone never counts a byte twice;
* which parts are valid is decided from the offset the caller knows (and the tail's recorded
  start), never by trusting everything ListParts returns: a failed concurrent write may leave
  a part after a gap, which later writes overwrite and ``finish`` leaves out.

A write is ``resume`` (where it continues, from the offset, ListParts and the tail) and then
a ``PartPipeline``, whose ``run`` reads top to bottom; its uploading parts are kept in order
by ``inflight.PartsInFlight``. ``EndedWrites`` keeps the parts of a write that ended an
upload for ``finish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterable
from typing import NamedTuple

from tusserver import errors
from tusserver.models import UploadInfo
from tusserver.storage.base import ProgressCallback
from tusserver.storage.partbuffer import PartBuffer
from tusserver.storage.parts import MAX_PARTS, MIN_PART
from tusserver.storage.s3.client import Part, S3Bucket, Tail, cumulative, multipart_of, run
from tusserver.storage.s3.inflight import PartsInFlight
from tusserver.storage.s3.translate import spooling

log = logging.getLogger("tusserver.storage")


class WriteStart(NamedTuple):
    """Where a write continues, decided from the offset, ListParts and the tail."""

    key: str
    upload_id: str
    part_size: int
    number: int  # the first part this write uploads
    position: int  # where that part starts in the upload
    kept: list[Part]  # the parts wholly below the offset, which stay
    trim: bool  # the tail holds bytes past the offset: it must be rewritten shorter
    skip: int  # bytes at the body's start that a stored part already holds


async def write(
    bucket: S3Bucket,
    ended: EndedWrites,
    info: UploadInfo,
    chunks: AsyncIterable[bytes],
    on_progress: ProgressCallback | None = None,
) -> int:
    """Store ``chunks`` at ``info.offset``; returns the bytes made durable."""
    start, buffer = await resume(bucket, info)
    return await PartPipeline(bucket, ended, info, start, buffer, on_progress).run(chunks)


async def resume(bucket: S3Bucket, info: UploadInfo) -> tuple[WriteStart, PartBuffer]:
    """Where the write continues, and the first part's buffer holding the tail's bytes
    before the offset (the caller owns it)."""
    upload_id, part_size = multipart_of(info)
    key = bucket.data_key(info.id)
    start = info.offset
    # From offset 0 every part is (re)written from the first, so the parts S3 holds do
    # not matter: a first write (creation-with-upload, say) skips the listing. Whether
    # the upload still exists is then learned from the first part it uploads, or
    # checked before a tail is written (see ``PartPipeline._store_tail``).
    parts = run(await bucket.list_parts(key, upload_id)) if start else []
    ends = cumulative(parts)
    # The parts wholly below the offset stay; everything from `base` on is (re)written.
    k = max(j for j, end in enumerate(ends) if end <= start)
    base = ends[k]
    carry = b""
    skip = 0
    tail: Tail | None = None
    if base < start:
        tail = await bucket.get_tail(info.id)
        if tail is not None and tail.start == base and len(tail.data) >= start - base:
            carry = tail.data[: start - base]
        elif k < len(parts):
            # The offset lies inside a part S3 already holds (its progress was never
            # recorded, say the process died first). Parts cannot be rewritten in part,
            # and a tus client resends the same bytes, so those are skipped.
            skip = ends[k + 1] - start
            k += 1
            base = ends[k]
            log.warning(
                "storage.resent_bytes_skipped",
                extra={"upload_id": info.id, "offset": start, "skipped": skip},
            )
        else:
            raise FileNotFoundError(f"S3 holds fewer bytes than offset {start} of {info.id}")
    trim = bool(carry) and tail is not None and len(tail.data) > len(carry)
    # The carried bytes start the first part's buffer (spilled to disk if they exceed the
    # memory limit); returning lets go of them, so they are not held all request.
    buffer = await _buffer_holding(bucket, carry)
    return WriteStart(key, upload_id, part_size, k + 1, base, parts[:k], trim, skip), buffer


def new_buffer(bucket: S3Bucket) -> PartBuffer:
    return PartBuffer(memory_limit=bucket.config.spool_memory, spool_dir=bucket.config.spool_dir)


async def _buffer_holding(bucket: S3Bucket, data: bytes) -> PartBuffer:
    buffer = new_buffer(bucket)
    try:
        with spooling():
            await buffer.append(data)
    except BaseException:
        buffer.close()
        raise
    return buffer


class PartPipeline:
    """One write: cuts the body into parts after what ``buffer`` (owned from here on) holds,
    uploads full parts while the body arrives, stores what is left as the upload's last part
    or as the tail, and reports durable bytes in order."""

    def __init__(
        self,
        bucket: S3Bucket,
        ended: EndedWrites,
        info: UploadInfo,
        start: WriteStart,
        buffer: PartBuffer,
        on_progress: ProgressCallback | None,
    ) -> None:
        self._bucket = bucket
        self._ended = ended
        self._info = info
        self._start = start
        self._key, self._upload_id, self._part_size = start.key, start.upload_id, start.part_size
        self._on_progress = on_progress
        self._buffer = buffer  # the part being filled
        self._number = start.number  # its number
        self._position = start.position  # where it starts in the upload
        self._skip = start.skip
        self._received = 0
        self._reported = info.offset
        # A tail object may hold bytes at or after `start.position`; it must be gone before
        # any progress past them is reported (storage alone would count them twice otherwise).
        self._tail_may_exist = True
        self._in_flight = PartsInFlight(bucket, self._key, self._upload_id)

    async def run(self, chunks: AsyncIterable[bytes]) -> int:
        """Consume ``chunks``; returns the bytes made durable past the offset."""
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                await self._take(chunk)
                await self._collect()
            await self._in_flight.wait()
            await self._collect()
            await self._store_rest()
            self._remember_if_ended()
            return self._reported - self._info.offset
        except asyncio.CancelledError:
            self._buffer.close()
            await self._in_flight.cancel()
            raise
        except BaseException:
            # Whatever failed (the client, S3, a callback): report what is durable, then let
            # the error propagate. The buffered bytes are dropped: the offset never moved past
            # them, so the client sends them again.
            self._buffer.close()
            await self._report_durable_and_cancel()
            raise
        finally:
            # Also on success: a buffer left unsealed (nothing to store) holds memory or a file.
            self._buffer.close()

    async def _take(self, chunk: bytes) -> None:
        """Add a chunk of the body to the part being filled, submitting each full part."""
        # A view of a buffer the producer reuses would change under us: keep bytes.
        view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))
        self._received += len(view)
        if self._skip:
            view = await self._skip_resent(view)
        part_size = self._part_size
        while len(view):
            take = view[: part_size - self._buffer.size]
            view = view[len(take) :]
            with spooling():
                await self._buffer.append(take)
            if self._buffer.size == part_size:
                await self._submit_full_part()

    async def _skip_resent(self, view: memoryview) -> memoryview:
        """Drop the body's bytes that a stored part already holds (see ``resume``)."""
        dropped = min(self._skip, len(view))
        self._skip -= dropped
        await self._advance(self._position - self._skip)
        return view[dropped:]

    async def _submit_full_part(self) -> None:
        if self._number > MAX_PARTS:
            raise errors.SizeExceeded(
                f"the upload needs more than {MAX_PARTS} parts of {self._part_size}"
            )
        # The parts in flight own the full buffer from here on (and close it).
        full, self._buffer = self._buffer, new_buffer(self._bucket)
        await self._in_flight.submit(self._number, full, self._position + self._part_size)
        self._number += 1
        self._position += self._part_size

    async def _collect(self) -> None:
        """Report the parts uploaded so far in order; raise the error of a failed one."""
        end, error = self._in_flight.durable()
        if end is not None:
            await self._advance(end)
        if error is not None:
            raise error

    async def _store_rest(self) -> None:
        """The bytes that did not fill a part: the upload's last part, or the tail."""
        size = self._buffer.size
        # S3 takes a last part of any size, so bytes that end the upload go straight
        # into it: no tail object, and no copy of one at finish (one less request and
        # no server-side copy, for nearly every upload).
        ends_upload = self._received > 0 and self._position + size == self._info.length
        if size >= MIN_PART or (size and ends_upload):
            await self._upload_last_part(size)
        elif size and (self._received or self._start.trim):
            await self._store_tail(size)

    async def _upload_last_part(self, size: int) -> None:
        if self._number > MAX_PARTS:
            raise errors.SizeExceeded()
        with spooling():
            body = await self._buffer.seal()
        etag = await self._bucket.upload_part(self._key, self._upload_id, self._number, body)
        self._buffer.close()
        await self._advance(self._position + size)
        self._in_flight.stored.append(Part(self._number, size, etag))

    async def _store_tail(self, size: int) -> None:
        if not self._info.offset and self._number == self._start.number:
            # No listing and no part uploaded: nothing has shown that the multipart
            # upload still exists, and a tail of a terminated one would be orphaned.
            await self._bucket.list_parts(self._key, self._upload_id)
        # Replaces any older tail in one step; the bytes before it are in parts.
        with spooling():
            body = await self._buffer.seal()
        await self._bucket.put_tail(self._info.id, self._position, body)
        self._buffer.close()
        self._tail_may_exist = False
        await self._advance(self._position + size)

    def _remember_if_ended(self) -> None:
        """Hand ``finish`` the parts of a write that ended the upload (no tail left)."""
        info = self._info
        if self._reported == info.length and not self._tail_may_exist:
            parts = [*self._start.kept, *self._in_flight.stored]
            self._ended.remember(info.id, self._upload_id, info.length, parts)

    async def _advance(self, end: int) -> None:
        """Report the upload durable up to ``end``, deleting the tail first if needed."""
        if end <= self._reported:
            return
        if self._tail_may_exist and end > self._start.position:
            await self._bucket.delete(self._bucket.tail_key(self._info.id))
            self._tail_may_exist = False
        self._reported = end
        if self._on_progress is not None:
            await self._on_progress(end)

    async def _report_durable_and_cancel(self) -> None:
        await self._in_flight.wait()
        with contextlib.suppress(Exception):
            end, _ = self._in_flight.durable()
            if end is not None:
                await self._advance(end)
        await self._in_flight.cancel()


class EndedWrites:
    """The parts of uploads whose last bytes this process wrote, until ``finish`` takes them.

    Finishing right after the write that ended an upload (the same request, usually) then
    needs no ListParts and no look for a tail: that write deleted any tail before it
    reported its bytes. Only a list that covers the upload exactly, numbered 1..n, is kept.
    A stale list (parts rewritten elsewhere since) makes CompleteMultipartUpload refuse its
    ETags, and ``finish`` falls back to listing. Bounded: uploads that never finish here
    age out, and long part lists, whose listing is a small share of the upload, are not
    kept.
    """

    MAX_UPLOADS = 1024
    MAX_PARTS = 100

    def __init__(self) -> None:
        self._parts: OrderedDict[str, tuple[str, int, list[Part]]] = OrderedDict()

    def remember(self, upload_id: str, multipart: str, length: int, parts: list[Part]) -> None:
        self._parts.pop(upload_id, None)
        if not 0 < len(parts) <= self.MAX_PARTS:
            return
        if [p.number for p in parts] != list(range(1, len(parts) + 1)):
            return
        if sum(p.size for p in parts) != length:
            return
        self._parts[upload_id] = (multipart, length, parts)
        while len(self._parts) > self.MAX_UPLOADS:
            self._parts.popitem(last=False)

    def take(self, upload_id: str, multipart: str, length: int) -> list[Part] | None:
        entry = self._parts.pop(upload_id, None)
        if entry is None or entry[0] != multipart or entry[1] != length:
            return None
        return entry[2]

    def forget(self, upload_id: str) -> None:
        self._parts.pop(upload_id, None)
