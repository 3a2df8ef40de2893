"""PATCH: append bytes at an offset (T027-T045), with deferred lengths and checksums.

Every check that can fail is made before the first ``receive()``, so a client that sent
``Expect: 100-continue`` gets its 4xx without uploading the body (T036). The order follows
T130: exists, final, content type, offset, length, size, checksum algorithm; then the body.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver import errors
from tusserver.body import BodyEnd, BodyReader
from tusserver.handlers.common import expires_header
from tusserver.models import UploadInfo
from tusserver.principal import principal_of
from tusserver.protocol import (
    Checksum,
    is_offset_content_type,
    new_hasher,
    parse_checksum,
    parse_non_negative_int,
)
from tusserver.uploads import UploadService, WriteResult


def parse_checksum_header(service: UploadService, raw: str | None) -> Checksum | None:
    if raw is None:
        return None
    if not service.features.checksum:
        raise errors.UnsupportedChecksum("this server does not verify checksums")
    return parse_checksum(raw, service.settings.checksum_algorithms)


def body_limit(
    service: UploadService, info: UploadInfo, length: int | None, content_length: int | None
) -> int | None:
    """How many more bytes this upload may take; 413 up front when the body cannot fit (T038)."""
    max_size = service.settings.max_size
    if length is not None:
        limit: int | None = length - info.offset
    elif max_size:
        limit = max_size - info.offset  # a deferred upload may not pass the maximum (T106)
    else:
        limit = None
    if content_length is not None and limit is not None and content_length > limit:
        raise errors.SizeExceeded("the body would pass the upload's length or the maximum size")
    return limit


def raise_for_end(result: WriteResult, *, shutting_down: bool = False) -> None:
    """Turn an early end of the body into the answer the client (if still there) gets."""
    if result.checksum_failed:
        raise errors.ChecksumMismatch()
    if result.end is BodyEnd.TOO_LARGE:
        raise errors.SizeExceeded("the body passed the upload's length or the maximum size")
    if result.end is BodyEnd.RELEASED:
        if shutting_down:
            # Retryable: tus clients HEAD and resume, through the balancer, elsewhere.
            raise errors.ShuttingDown(headers={"Connection": "close", "Retry-After": "1"})
        raise errors.Interrupted()
    if result.end is BodyEnd.TIMED_OUT:
        raise errors.ReadTimeout()
    if result.end is BodyEnd.DISCONNECTED:
        raise errors.Interrupted("the client disconnected")


async def handle_patch(service: UploadService, request: Request, upload_id: str) -> Response:
    headers = request.headers
    owner = principal_of(request).owner_filter
    async with service.locked_for(upload_id, owner=owner, writing=True) as lock:
        info = await service.load_locked(upload_id, owner=owner)
        if info.is_final:
            raise errors.ModifyFinal()
        if not is_offset_content_type(headers.get("content-type")):
            raise errors.InvalidContentType()
        offset = parse_non_negative_int(headers.get("upload-offset"), errors.InvalidOffset)
        if offset is None:
            raise errors.InvalidOffset("Upload-Offset is required")
        if offset != info.offset:
            raise errors.MismatchedOffset(
                f"Upload-Offset is {offset} but the upload is at {info.offset}"
            )
        declared = parse_non_negative_int(headers.get("upload-length"), errors.InvalidLength)
        if declared is not None:
            if info.length is not None:
                # Repeating the same length is harmless: tus-js-client 4.x re-sends it on a
                # retried final PATCH (T102). Changing it is not (T101).
                if declared != info.length:
                    raise errors.LengthChanged()
                declared = None
            elif declared < info.offset:
                raise errors.InvalidLength("Upload-Length is below the current offset")
            elif service.settings.max_size and declared > service.settings.max_size:
                raise errors.SizeExceeded("Upload-Length exceeds the maximum size")
        if info.is_complete:
            # Idempotent no-op for a retried final PATCH (A5, T039); finishing again repairs a
            # crash between the last write and the completion record.
            if info.finished_at is None:
                info = await service.finish(info)
            return _patched(info)
        length = info.length if info.length is not None else declared
        content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
        limit = body_limit(service, info, length, content_length)
        checksum = parse_checksum_header(service, headers.get("upload-checksum"))
        reader = BodyReader(
            request.receive,
            limit=limit,
            read_timeout=service.settings.read_timeout,
            hasher=new_hasher(checksum.algorithm) if checksum is not None else None,
        )
        lock.on_release_request(reader.interrupt)
        result = await service.write(info, reader, checksum=checksum, declared_length=declared)
        info = result.info
        if info.is_complete:
            info = await service.finish(info)
        raise_for_end(result, shutting_down=service.shutting_down)
    return _patched(info)


def _patched(info: UploadInfo) -> Response:
    return Response(
        status_code=204, headers={"Upload-Offset": str(info.offset), **expires_header(info)}
    )
