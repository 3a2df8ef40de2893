"""Upload creation: a POST to the collection carrying the completion flag, with or without
content, complete in one request or not (docs/protocol.md, "IETF draft: creation").

Everything that can refuse the request is checked before the upload exists, as for tus; then
the upload is created, the 104 announces it (when the server can send one and the client
named an interop version), and only then is the body read.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from tusserver import errors
from tusserver.core.uploads import UploadService
from tusserver.hooks import screen_creation
from tusserver.ietf.fields import parse_sf_offset
from tusserver.ietf.integrity import creation_digest
from tusserver.ietf.interim import send_resumption_supported
from tusserver.ietf.limits import limit_header
from tusserver.ietf.representation import creation_metadata
from tusserver.ietf.transfer import settle, write_body
from tusserver.ietf.versions import InteropRules
from tusserver.models import UploadInfo
from tusserver.security.admission import admit_creation
from tusserver.security.principal import principal_of
from tusserver.tus.handlers.common import upload_url
from tusserver.tus.protocol import (
    Checksum,
    parse_non_negative_int,
)


async def handle_creation(
    service: UploadService, request: Request, rules: InteropRules, send: Send
) -> Response:
    headers = request.headers
    complete = rules.completion(headers)
    if complete is None:
        raise errors.CompletionRequired(f"{rules.flag_header} is required to create an upload")
    content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
    length = creation_length(service, headers, complete=complete, content_length=content_length)
    checksum = creation_digest(service, headers, complete=complete) if content_length != 0 else None
    metadata, metadata_raw = creation_metadata(service, headers)
    principal = principal_of(request)
    settings = service.settings
    await admit_creation(
        settings, service.ctx.state, principal, length=length, metadata=metadata, concat=None
    )
    metadata, metadata_raw = await screen_creation(
        request,
        length=length,
        metadata=metadata,
        metadata_raw=metadata_raw,
        owner=principal.user_id,
        concat=None,
    )
    info = await service.create(
        length=length,
        metadata=metadata,
        metadata_raw=metadata_raw,
        owner=principal.user_id,
        # With a digest the creation is all or nothing, as tus's with a checksum.
        announce=checksum is None,
    )
    location = upload_url(request, service.settings, info.id)
    announced = False
    if rules.version is not None:
        # The draft forbids the 104 to a request without an interop version.
        announced = await send_resumption_supported(
            request.scope,
            send,
            {
                "Location": location,
                **rules.version_header(),
                **limit_header(service, rules, info, principal),
            },
        )
    if content_length != 0 and not info.is_complete:
        info = await _receive(
            service, request, info, content_length, checksum, complete, announced=announced
        )
    response_headers = {
        "Location": location,
        **rules.version_header(),
        **rules.flag(info.is_complete),
        "Upload-Offset": str(info.offset),
        **limit_header(service, rules, info, principal),
    }
    return Response(status_code=rules.creation_status, headers=response_headers)


async def _receive(
    service: UploadService,
    request: Request,
    info: UploadInfo,
    content_length: int | None,
    checksum: Checksum | None,
    complete: bool,
    *,
    announced: bool,
) -> UploadInfo:
    async with service.writing(info.id) as lock:
        try:
            result = await write_body(
                service,
                request,
                lock,
                info,
                content_length=content_length,
                checksum=checksum,
                declared_length=None,
            )
        except errors.InsufficientStorage:
            if not announced:
                # No Location reached the client: nothing could resume this upload.
                await service.abandon_created(info)
            raise
        if result.checksum_failed:
            # All or nothing, as tus's creation with a checksum: a refused creation leaves
            # nothing behind, and the client's 4xx tells it not to resume.
            await service.terminate(result.info, announce=False)
        elif checksum is not None:
            await service.announce_created(result.info)
        return await settle(service, result, complete=complete)


def creation_length(
    service: UploadService, headers: Headers, *, complete: bool, content_length: int | None
) -> int | None:
    """The upload's length from ``Upload-Length`` and, on a completing request, from
    ``Content-Length``; None when neither says (it is then known when the upload ends)."""
    declared = parse_sf_offset(headers.get("upload-length"), "Upload-Length")
    from_content = content_length if complete else None
    if declared is not None and from_content is not None and declared != from_content:
        raise errors.InconsistentLength(
            f"Upload-Length is {declared} but the complete content has {from_content} bytes"
        )
    length = declared if declared is not None else from_content
    if length is not None and content_length is not None and content_length > length:
        raise errors.InconsistentLength(f"the content is longer than the upload's {length} bytes")
    max_size = service.settings.max_size
    if length is not None and max_size and length > max_size:
        raise errors.SizeExceeded(f"the upload's length exceeds the maximum size of {max_size}")
    if length is None and not service.features.defer_length:
        raise errors.LengthRequired("Upload-Length (or a completing Content-Length) is required")
    return length
