"""Turning an upload's parts (and tail) into the finished object, and concatenation.

This module owns:

* ``finish``: CompleteMultipartUpload with exactly the parts that hold the upload's bytes,
  the tail's bytes copied into the last part by S3 itself (they never pass through this
  process); an upload under 5 MiB in all becomes a plain object, as S3 cannot complete a
  multipart upload without parts. Finishing again after a crash finds the object and
  succeeds;
* ``concat``: a final upload made of partial uploads, by server-side part copies when every
  partial but the last is a valid part size, else by streaming their bytes through the
  ordinary write path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from tusserver import errors
from tusserver.models import UploadInfo
from tusserver.state.fence import check_held
from tusserver.storage.parts import MAX_PART, MAX_PARTS, MIN_PART
from tusserver.storage.s3 import pipeline
from tusserver.storage.s3.client import (
    Part,
    S3Bucket,
    TailSize,
    cumulative,
    multipart_of,
    run,
)
from tusserver.storage.s3.pipeline import EndedWrites
from tusserver.storage.s3.reads import get_range
from tusserver.storage.s3.translate import refusals, translated

log = logging.getLogger("tusserver.storage")


async def finish(bucket: S3Bucket, ended: EndedWrites, info: UploadInfo) -> UploadInfo:
    if info.length is None:
        raise ValueError(f"upload {info.id} has no length to finish at")
    upload_id, _ = multipart_of(info)
    key = bucket.data_key(info.id)
    parts = ended.take(info.id, upload_id, info.length)
    if parts is not None:
        try:
            await bucket.complete(key, upload_id, parts)
        except (FileNotFoundError, ClientError):
            # Parts rewritten since (InvalidPart), or the upload completed or removed
            # meanwhile (NoSuchUpload): the listing below finds out which. An outage
            # (StorageUnavailable) is not retried here: botocore already did.
            log.info("storage.finish_relisted", extra={"upload_id": info.id})
        else:
            return info
    try:
        listed = await bucket.list_parts(key, upload_id)
    except FileNotFoundError:
        # No multipart upload: finished before (finish may be called again after a
        # crash) if the object exists, else terminated (FileNotFoundError from head).
        await bucket.head_size(key, "data object")
        await bucket.delete(bucket.tail_key(info.id))
        return info
    await _complete_listed(bucket, info, info.length, upload_id, run(listed))
    return info


async def _complete_listed(
    bucket: S3Bucket, info: UploadInfo, length: int, upload_id: str, parts: list[Part]
) -> None:
    """Complete with the listed parts that hold the upload's ``length`` bytes, and the tail."""
    key = bucket.data_key(info.id)
    # The tail's bytes never pass through this process: S3 copies them into the last
    # part (or the object) itself. 100 uploads finishing together held 100 tails.
    tail = await bucket.head_tail(info.id)
    found = _choose(parts, tail, length)
    if found is None:
        raise FileNotFoundError(f"S3 holds fewer than {length} bytes of {info.id}")
    chosen, last = found
    if not chosen:
        # Under 5 MiB in all (or empty): one plain object; S3 cannot complete a multipart
        # upload without parts. Written before the abort, so a retry finds the upload.
        await _store_small(bucket, info, key, last, tail)
        await bucket.abort(key, upload_id)
    else:
        completed = list(chosen)
        if last:
            number = len(chosen) + 1
            check_held()
            with translated("upload part copy"):
                resp = await bucket.client.upload_part_copy(
                    Bucket=bucket.name,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=bucket.tail_source(info.id),  # type: ignore[arg-type]
                    CopySourceRange=f"bytes=0-{last - 1}",
                )
            completed.append(Part(number, last, resp["CopyPartResult"]["ETag"]))
        await bucket.complete(key, upload_id, completed)
    if tail is not None:  # finish runs under the upload's lock: no tail appeared since
        await bucket.delete(bucket.tail_key(info.id))


def _choose(parts: list[Part], tail: TailSize | None, length: int) -> tuple[list[Part], int] | None:
    """The parts that start the upload and how many of the tail's bytes end it (0: the
    parts alone hold all ``length`` bytes); None if S3 holds fewer bytes than that."""
    for j, end in enumerate(cumulative(parts)):
        if tail is not None and tail.start == end and end + tail.size >= length:
            return parts[:j], length - end
        if end == length:
            return parts[:j], 0
    return None


async def _store_small(
    bucket: S3Bucket, info: UploadInfo, key: str, size: int, tail: TailSize | None
) -> None:
    """Write the whole upload, ``size`` bytes at the start of the tail, as the object."""
    check_held()
    if tail is not None and tail.size == size and size:
        with refusals("copy object"), translated("copy object"):
            await bucket.client.copy_object(
                Bucket=bucket.name,
                Key=key,
                CopySource=bucket.tail_source(info.id),  # type: ignore[arg-type]
                MetadataDirective="REPLACE",
                **bucket.object_args(info),
            )
        return
    # Empty, or a tail longer than the upload (never written by us): by value.
    data = b""
    if size:
        full = await bucket.get_tail(info.id)
        if full is None or len(full.data) < size:
            raise FileNotFoundError(f"S3 holds fewer than {info.length} bytes of {info.id}")
        data = full.data[:size]
    check_held()
    with refusals("put object"), translated("put object"):
        await bucket.client.put_object(
            Bucket=bucket.name, Key=key, Body=data, **bucket.object_args(info)
        )


async def concat(
    bucket: S3Bucket, ended: EndedWrites, final: UploadInfo, partials: Sequence[UploadInfo]
) -> None:
    sources: list[tuple[str, int]] = []
    for partial in partials:
        if partial.length is None:
            raise ValueError(f"partial upload {partial.id} has no length")
        if partial.length:
            sources.append((bucket.data_key(partial.id), partial.length))
    upload_id, _ = multipart_of(final)
    key = bucket.data_key(final.id)
    # A tail left by an earlier, interrupted attempt must not be taken for these bytes.
    await bucket.delete(bucket.tail_key(final.id))
    if sources and all(length >= MIN_PART for _, length in sources[:-1]):
        await _concat_by_copy(bucket, key, upload_id, sources)
    else:
        # Some partial is too small to be a part of its own: stream the bytes through
        # the ordinary write path (bounded memory), which cuts them into parts.
        await pipeline.write(
            bucket, ended, final.replace(offset=0), _stream_objects(bucket, sources)
        )


async def _concat_by_copy(
    bucket: S3Bucket, key: str, upload_id: str, sources: Sequence[tuple[str, int]]
) -> None:
    jobs: list[tuple[int, str, str | None]] = []
    for source, length in sources:
        pieces = -(-length // MAX_PART)
        if pieces == 1:
            jobs.append((len(jobs) + 1, source, None))
            continue
        # Over 5 GiB: several ranged copies of nearly equal size, each well above 5 MiB.
        size = -(-length // pieces)
        for first in range(0, length, size):
            last = min(first + size, length) - 1
            jobs.append((len(jobs) + 1, source, f"bytes={first}-{last}"))
    if len(jobs) > MAX_PARTS:
        raise errors.SizeExceeded()
    limit = asyncio.Semaphore(bucket.config.concurrency)

    async def copy(number: int, source: str, byte_range: str | None) -> None:
        extra: dict[str, Any] = {"CopySourceRange": byte_range} if byte_range else {}
        async with limit, bucket.config.parts_in_flight:
            check_held()
            with translated(f"copy {source}"):
                await bucket.client.upload_part_copy(
                    Bucket=bucket.name,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": bucket.name, "Key": source},
                    **extra,
                )

    async with asyncio.TaskGroup() as group:
        for job in jobs:
            group.create_task(copy(*job))


async def _stream_objects(
    bucket: S3Bucket, sources: Sequence[tuple[str, int]]
) -> AsyncIterator[bytes]:
    for source, length in sources:
        seen = 0
        async for piece in get_range(bucket, source, 0, length):
            seen += len(piece)
            yield piece
        if seen != length:
            raise FileNotFoundError(f"{source} holds {seen} bytes, expected {length}")
