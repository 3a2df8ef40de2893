"""POST: creation, creation-with-upload, creation-defer-length and concatenation (T062-T108).

Everything that can reject the request is checked before the upload exists, so a rejected
POST never leaves an orphan behind (T088 improves on tusd here).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver import errors
from tusserver.admission import admit_creation
from tusserver.body import BodyReader
from tusserver.handlers.common import expires_header, upload_url
from tusserver.handlers.patch import body_limit, parse_checksum_header, raise_for_end
from tusserver.hooks import screen_creation
from tusserver.models import ConcatKind
from tusserver.principal import principal_of
from tusserver.protocol import (
    is_offset_content_type,
    new_hasher,
    parse_concat,
    parse_metadata,
    parse_non_negative_int,
)
from tusserver.uploads import UploadService, check_metadata_size


async def handle_post(service: UploadService, request: Request) -> Response:
    headers = request.headers
    settings = service.settings
    concat_raw = headers.get("upload-concat")
    concat = parse_concat(concat_raw, settings.base_path, settings.max_concat_parts)
    if concat is not None and not service.features.concatenation:
        raise errors.ConcatUnsupported()
    is_final = concat is not None and concat.kind is ConcatKind.FINAL

    length = parse_non_negative_int(headers.get("upload-length"), errors.InvalidLength)
    defer = headers.get("upload-defer-length")
    if is_final:
        length = None  # computed from the partials; a client-sent value is ignored (T163)
    elif defer is not None:
        if defer.strip() != "1":
            raise errors.InvalidDeferLength()
        if not service.features.defer_length:
            raise errors.DeferNotSupported()
        if length is not None:
            raise errors.AmbiguousLength()
    elif length is None:
        raise errors.LengthRequired()
    if length is not None and settings.max_size and length > settings.max_size:
        raise errors.SizeExceeded(f"Upload-Length exceeds the maximum size of {settings.max_size}")

    metadata_raw = headers.get("upload-metadata")
    if metadata_raw is not None and len(metadata_raw) > settings.max_metadata_size:
        # Before parsing: the cost of a huge header is not spent on decoding it.
        check_metadata_size(settings.max_metadata_size, {}, metadata_raw)
    metadata = parse_metadata(metadata_raw)
    if metadata_raw is not None and not metadata_raw.strip():
        metadata_raw = None  # an empty header means no metadata (T069)

    # A body counts only with the tus media type; some stacks force a default type on empty
    # bodies, and tusd ignores those too (T087).
    tus_body = is_offset_content_type(headers.get("content-type"))
    content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
    has_body = tus_body and content_length != 0
    if is_final and has_body:
        raise errors.ModifyFinal("a final upload cannot carry data (T162)")
    checksum = parse_checksum_header(service, headers.get("upload-checksum")) if has_body else None
    if has_body and content_length is not None:
        if length is not None and content_length > length:
            raise errors.SizeExceeded("the body is longer than Upload-Length")
        if length is None and settings.max_size and content_length > settings.max_size:
            raise errors.SizeExceeded("the body exceeds the maximum size")

    principal = principal_of(request)
    owner = principal.user_id
    # The type allowlist and the caller's role's size limit (TUS_MAX_SIZE_USER/_ADMIN).
    await admit_creation(
        settings, service.ctx.state, principal, length=length, metadata=metadata, concat=concat
    )
    # Last, once the request is known good: the operator's pre-create hook, if configured,
    # may refuse the upload or add metadata.
    metadata, metadata_raw = await screen_creation(
        request,
        length=length,
        metadata=metadata,
        metadata_raw=metadata_raw,
        owner=owner,
        concat=concat,
    )
    info = await service.create(
        length=length,
        metadata=metadata,
        metadata_raw=metadata_raw,
        concat=concat,
        concat_raw=concat_raw.strip() if concat_raw is not None else None,
        owner=owner,
        # With a checksum the creation is all or nothing (A20): listeners hear of the upload
        # only once its data verified, never of one the client was refused.
        announce=checksum is None,
    )
    response_headers = {"Location": upload_url(request, settings, info.id)}
    if has_body and not info.is_complete:
        async with service.writing(info.id) as lock:
            reader = BodyReader(
                request.receive,
                limit=body_limit(service, info, length, content_length),
                read_timeout=settings.read_timeout,
                hasher=new_hasher(checksum.algorithm) if checksum is not None else None,
            )
            lock.on_release_request(reader.interrupt)
            try:
                result = await service.write(info, reader, checksum=checksum)
            except errors.InsufficientStorage:
                # The client gets no Location, so the upload could never be resumed: a
                # failed creation leaves nothing behind, and the client's retry starts over.
                await service.abandon_created(info)
                raise
            if result.checksum_failed:
                # All or nothing: a creation whose data fails its checksum creates nothing.
                await service.terminate(result.info, announce=False)
                raise errors.ChecksumMismatch()
            if checksum is not None:
                await service.announce_created(result.info)
            info = result.info
            if info.is_complete:
                info = await service.finish(info)
            raise_for_end(result, shutting_down=service.shutting_down)
    if tus_body and not is_final:
        # Upload-Offset only when a body was sent (T074, T086).
        response_headers["Upload-Offset"] = str(info.offset)
    response_headers.update(expires_header(info))
    return Response(status_code=201, headers=response_headers)
