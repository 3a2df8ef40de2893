"""PATCH: append bytes at an offset, with deferred lengths and checksums.

Every check that can fail is made before the first ``receive()``, so a client that sent
``Expect: 100-continue`` gets its 4xx without uploading the body. The order is fixed:
exists, final, content type, offset, length, size, checksum algorithm; then the body
(docs/protocol.md, "Appending").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver import errors
from tusserver.core.uploads import UploadService
from tusserver.models import UploadInfo
from tusserver.security.principal import principal_of
from tusserver.tus.handlers.append import (
    body_limit,
    open_body,
    parse_checksum_header,
    raise_for_end,
)
from tusserver.tus.handlers.common import expires_header
from tusserver.tus.protocol import is_offset_content_type, parse_non_negative_int


async def handle_patch(service: UploadService, request: Request, upload_id: str) -> Response:
    headers = request.headers
    owner = principal_of(request).owner_filter
    async with service.locked_for(upload_id, owner=owner, writing=True) as lock:
        info = await service.load_locked(upload_id, owner=owner)
        if info.is_final:
            raise errors.ModifyFinal()
        if not is_offset_content_type(headers.get("content-type")):
            raise errors.InvalidContentType()
        _check_offset(info, headers.get("upload-offset"))
        declared = _declared_length(service, info, headers.get("upload-length"))
        if info.is_complete:
            # Idempotent no-op for a retried final PATCH
            # (docs/protocol.md, "PATCH on a completed upload"); finishing again repairs a
            # crash between the last write and the completion record.
            if info.finished_at is None:
                info = await service.finish(info)
            return _patched(info)
        length = info.length if info.length is not None else declared
        content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
        limit = body_limit(service, info, length, content_length)
        checksum = parse_checksum_header(service, headers.get("upload-checksum"))
        reader = open_body(service, request, lock, limit=limit, checksum=checksum)
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


def _check_offset(info: UploadInfo, raw: str | None) -> None:
    """``Upload-Offset`` must be present and equal the upload's offset (409 otherwise)."""
    offset = parse_non_negative_int(raw, errors.InvalidOffset)
    if offset is None:
        raise errors.InvalidOffset("Upload-Offset is required")
    if offset != info.offset:
        raise errors.MismatchedOffset(
            f"Upload-Offset is {offset} but the upload is at {info.offset}"
        )


def _declared_length(service: UploadService, info: UploadInfo, raw: str | None) -> int | None:
    """The length this PATCH declares for a deferred upload, or None if it declares none.

    A length already known may be repeated but not changed.
    """
    declared = parse_non_negative_int(raw, errors.InvalidLength)
    if declared is None:
        return None
    if info.length is not None:
        # Repeating the same length is harmless: tus-js-client 4.x re-sends it on a retried
        # final PATCH. Changing it is not
        # (docs/protocol.md, "Upload-Length repeated or changed").
        if declared != info.length:
            raise errors.LengthChanged()
        return None
    if declared < info.offset:
        raise errors.InvalidLength("Upload-Length is below the current offset")
    max_size = service.settings.max_size
    if max_size and declared > max_size:
        raise errors.SizeExceeded("Upload-Length exceeds the maximum size")
    return declared
