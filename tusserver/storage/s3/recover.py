"""Rebuilding an upload's record from S3 alone, and sweeping what no record knows.

* ``recover``: the info object (the record as of creation or length declaration), the
  offset from ListParts (the gapless run from part 1) and the tail, or the finished object;
* ``sweep_orphans``: abort multipart uploads under our prefix that no state knows.
"""

from __future__ import annotations

import json
import logging
import re

from tusserver.models import UploadInfo
from tusserver.storage.base import KnownCheck
from tusserver.storage.s3.client import S3Bucket, cumulative, run
from tusserver.storage.s3.translate import translated

log = logging.getLogger("tusserver.storage")


async def recover(bucket: S3Bucket, upload_id: str) -> UploadInfo | None:
    info = await _read_info(bucket, upload_id)
    if info is None:
        return None
    key = bucket.data_key(upload_id)
    multipart = info.storage.get("upload_id")
    try:
        if not isinstance(multipart, str):
            raise FileNotFoundError(key)
        parts = await bucket.list_parts(key, multipart)
    except FileNotFoundError:
        # No multipart upload any more: finished (the object exists) or half-terminated.
        try:
            with translated("data object"):
                head = await bucket.client.head_object(Bucket=bucket.name, Key=key)
        except FileNotFoundError:
            return None
        finished_at = info.finished_at or head["LastModified"].timestamp()
        return info.replace(offset=head["ContentLength"], finished_at=finished_at)
    ends = cumulative(run(parts))
    offset = ends[-1]
    tail = await bucket.head_tail(upload_id)
    if tail is not None and tail.start in ends:
        # A tail always ends the durable bytes; parts past its start were never reported.
        offset = tail.start + tail.size
    if info.length is not None:
        offset = min(offset, info.length)
    return info.replace(offset=offset)


async def _read_info(bucket: S3Bucket, upload_id: str) -> UploadInfo | None:
    info_key = bucket.info_key(upload_id)
    try:
        with translated("info object"):
            resp = await bucket.client.get_object(Bucket=bucket.name, Key=info_key)
            async with resp["Body"] as body:
                raw = await body.read()
    except FileNotFoundError:
        return None
    info = UploadInfo.from_dict(json.loads(raw))
    if info.id != upload_id:
        raise ValueError(f"info object {info_key} describes upload {info.id}")
    return info


async def sweep_orphans(bucket: S3Bucket, is_known: KnownCheck, older_than: float) -> int:
    """Abort multipart uploads under our prefix that no state knows (and that cannot be
    rebuilt from an info object), started before ``older_than``: parts nobody will ever
    complete are billed storage until aborted."""
    prefix = bucket.config.prefix
    pattern = re.compile(re.escape(prefix) + r"([0-9a-f]{32})")
    doomed: list[tuple[str, str, str]] = []
    paginator = bucket.client.get_paginator("list_multipart_uploads")
    with translated("list multipart uploads"):
        async for page in paginator.paginate(Bucket=bucket.name, Prefix=prefix):
            for upload in page.get("Uploads", []):
                key, multipart_id = upload.get("Key", ""), upload.get("UploadId", "")
                match = pattern.fullmatch(key)
                initiated = upload.get("Initiated")
                if match is None or not multipart_id or initiated is None:
                    continue  # not one of ours (another tool shares the bucket)
                if initiated.timestamp() < older_than:
                    doomed.append((match.group(1), key, multipart_id))
    aborted = 0
    for upload_id, key, multipart_id in doomed:
        if await is_known(upload_id):
            continue
        await bucket.abort(key, multipart_id)
        await bucket.delete(bucket.tail_key(upload_id))
        log.warning("storage.orphan_aborted", extra={"upload_id": upload_id})
        aborted += 1
    return aborted
