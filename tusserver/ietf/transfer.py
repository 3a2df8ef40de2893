"""Writing a request body into an upload: the step the draft's creation and append share.

It reuses the tus append step (``tusserver.handlers.append``: the size limit, the body reader
the lock can interrupt, the checksum machinery) and adds the draft's completion rule: an upload
completes when a request that says so ends normally, even when its length was not known before
(docs/protocol.md, "IETF draft: completion").
"""

from __future__ import annotations

from starlette.requests import Request

from tusserver import errors
from tusserver.core.uploads import UploadService, WriteResult
from tusserver.edge.body import BodyEnd
from tusserver.models import UploadInfo
from tusserver.state.base import LockHandle
from tusserver.tus.handlers.append import body_limit, open_body, raise_for_end
from tusserver.tus.protocol import Checksum


async def write_body(
    service: UploadService,
    request: Request,
    lock: LockHandle,
    info: UploadInfo,
    *,
    content_length: int | None,
    checksum: Checksum | None,
    declared_length: int | None,
) -> WriteResult:
    """Append the body at ``info.offset``; the caller holds ``lock`` and checked the offset."""
    length = info.length if info.length is not None else declared_length
    limit = body_limit(service, info, length, content_length)
    reader = open_body(service, request, lock, limit=limit, checksum=checksum)
    return await service.write(
        info,
        reader,
        checksum=checksum,
        declared_length=declared_length if info.length is None else None,
    )


async def settle(service: UploadService, result: WriteResult, *, complete: bool) -> UploadInfo:
    """After a write: complete the upload if the request asked to and its body ended normally,
    finish a complete one, and turn an early end into the client's answer."""
    info = result.info
    if result.checksum_failed:
        raise errors.ChecksumMismatch("Content-Digest does not match the content")
    if complete and result.end is BodyEnd.COMPLETE and not info.is_complete:
        if info.length is not None:
            # The request said "this is the end" but the bytes stop short of the length.
            raise errors.InconsistentLength(
                f"the upload ended at {info.offset} bytes but its length is {info.length}"
            )
        info = await service.declare_length(info, info.offset)
    if info.is_complete and info.finished_at is None:
        info = await service.finish(info)
    raise_for_end(result, shutting_down=service.shutting_down)
    return info
