"""POST: creation, creation-with-upload, creation-defer-length and concatenation; see
docs/protocol.md, sections "Creation", "Creation with upload", "Deferred length" and
"Concatenation".

Everything that can reject the request is checked before the upload exists, so a rejected
POST never leaves an orphan behind (tusd creates first and may orphan one). The checks run
in a fixed order (concatenation, length, metadata, body), which decides the error a request with
several faults gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from tusserver import errors
from tusserver.core.uploads import UploadService, check_metadata_size
from tusserver.hooks import screen_creation
from tusserver.models import ConcatKind
from tusserver.security.admission import admit_creation
from tusserver.security.principal import principal_of
from tusserver.tus.handlers.append import (
    body_limit,
    open_body,
    parse_checksum_header,
    raise_for_end,
)
from tusserver.tus.handlers.common import expires_header, upload_url
from tusserver.tus.protocol import (
    Checksum,
    ConcatRequest,
    is_offset_content_type,
    parse_concat,
    parse_metadata,
    parse_non_negative_int,
)


@dataclass(frozen=True, slots=True)
class _CreationBody:
    """What a creation request says about its body (creation-with-upload)."""

    tus: bool  # sent with the tus media type: the response then carries Upload-Offset
    present: bool  # there are bytes to write
    content_length: int | None
    checksum: Checksum | None


async def handle_post(service: UploadService, request: Request) -> Response:
    headers = request.headers
    settings = service.settings
    concat_raw = headers.get("upload-concat")
    concat = _parse_concat(service, concat_raw)
    is_final = concat is not None and concat.kind is ConcatKind.FINAL
    length = _creation_length(service, headers, is_final=is_final)
    metadata, metadata_raw = _creation_metadata(service, headers.get("upload-metadata"))
    body = _creation_body(service, headers, length, is_final=is_final)

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
    checksum = body.checksum
    info = await service.create(
        length=length,
        metadata=metadata,
        metadata_raw=metadata_raw,
        concat=concat,
        concat_raw=concat_raw.strip() if concat_raw is not None else None,
        owner=owner,
        # With a checksum the creation is all or nothing
        # (docs/protocol.md, "Creation with upload"): listeners hear of the upload only once
        # its data verified, never of one the client was refused.
        announce=checksum is None,
    )
    response_headers = {"Location": upload_url(request, settings, info.id)}
    if body.present and not info.is_complete:
        # The same append step as PATCH, awaited here directly so the body's chunks pass
        # through no extra coroutine; what differs is what a failure undoes.
        async with service.writing(info.id) as lock:
            limit = body_limit(service, info, length, body.content_length)
            reader = open_body(service, request, lock, limit=limit, checksum=checksum)
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
    if body.tus and not is_final:
        # Upload-Offset only when a body was sent (docs/protocol.md, "Creation").
        response_headers["Upload-Offset"] = str(info.offset)
    response_headers.update(expires_header(info))
    return Response(status_code=201, headers=response_headers)


def _parse_concat(service: UploadService, raw: str | None) -> ConcatRequest | None:
    """``Upload-Concat``, refused when the concatenation extension is off."""
    settings = service.settings
    concat = parse_concat(raw, settings.base_path, settings.max_concat_parts)
    if concat is not None and not service.features.concatenation:
        raise errors.ConcatUnsupported()
    return concat


def _creation_length(service: UploadService, headers: Headers, *, is_final: bool) -> int | None:
    """The upload's length, or None when it is deferred or (for a final upload) computed."""
    length = parse_non_negative_int(headers.get("upload-length"), errors.InvalidLength)
    defer = headers.get("upload-defer-length")
    if is_final:
        # Computed from the partials; a client-sent value is ignored
        # (docs/protocol.md, "Concatenation").
        length = None
    elif defer is not None:
        if defer.strip() != "1":
            raise errors.InvalidDeferLength()
        if not service.features.defer_length:
            raise errors.DeferNotSupported()
        if length is not None:
            raise errors.AmbiguousLength()
    elif length is None:
        raise errors.LengthRequired()
    max_size = service.settings.max_size
    if length is not None and max_size and length > max_size:
        raise errors.SizeExceeded(f"Upload-Length exceeds the maximum size of {max_size}")
    return length


def _creation_metadata(
    service: UploadService, raw: str | None
) -> tuple[dict[str, str | None], str | None]:
    """``Upload-Metadata`` parsed, and the raw header to store (None for an empty one)."""
    limit = service.settings.max_metadata_size
    if raw is not None and len(raw) > limit:
        # Before parsing: the cost of a huge header is not spent on decoding it.
        check_metadata_size(limit, {}, raw)
    metadata = parse_metadata(raw)
    if raw is not None and not raw.strip():
        # An empty header means no metadata (docs/protocol.md, "Upload-Metadata strictness").
        raw = None
    return metadata, raw


def _creation_body(
    service: UploadService, headers: Headers, length: int | None, *, is_final: bool
) -> _CreationBody:
    """Whether the creation carries data, refused when the data cannot be accepted."""
    # A body counts only with the tus media type; some stacks force a default type on empty
    # bodies, and tusd ignores those too (docs/protocol.md, "Creation with upload").
    tus = is_offset_content_type(headers.get("content-type"))
    content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
    present = tus and content_length != 0
    if is_final and present:
        raise errors.ModifyFinal("a final upload cannot carry data")
    checksum = parse_checksum_header(service, headers.get("upload-checksum")) if present else None
    if present and content_length is not None:
        max_size = service.settings.max_size
        if length is not None and content_length > length:
            raise errors.SizeExceeded("the body is longer than Upload-Length")
        if length is None and max_size and content_length > max_size:
            raise errors.SizeExceeded("the body exceeds the maximum size")
    return _CreationBody(tus, present, content_length, checksum)
