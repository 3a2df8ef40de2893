"""Upload append: PATCH to an upload URL (docs/protocol.md, "IETF draft: append").

The request is checked before its body is read, in a fixed order: the completion flag and
media type the interop version requires, the offset, the lengths; then, under the upload's
lock (which asks a request still holding it to store what arrived and let go), ownership,
completion and the offset against the upload's.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from tusserver import errors
from tusserver.core.uploads import UploadService
from tusserver.ietf.fields import parse_sf_offset
from tusserver.ietf.integrity import content_digest
from tusserver.ietf.problems import OffsetMismatch
from tusserver.ietf.transfer import settle, write_body
from tusserver.ietf.versions import PARTIAL_UPLOAD, InteropRules
from tusserver.models import UploadInfo
from tusserver.security.principal import principal_of
from tusserver.tus.protocol import parse_non_negative_int


async def handle_append(
    service: UploadService, request: Request, rules: InteropRules, upload_id: str
) -> Response:
    headers = request.headers
    complete = _completion(rules, headers)
    if rules.append_media_type and not _is_partial_upload(headers.get("content-type")):
        raise errors.InvalidContentType(f"Content-Type must be {PARTIAL_UPLOAD}")
    offset = parse_sf_offset(headers.get("upload-offset"), "Upload-Offset")
    if offset is None:
        raise errors.InvalidOffset("Upload-Offset is required")
    declared = parse_sf_offset(headers.get("upload-length"), "Upload-Length")
    content_length = parse_non_negative_int(headers.get("content-length"), errors.BadRequest)
    owner = principal_of(request).owner_filter
    async with service.locked_for(upload_id, owner=owner, writing=True) as lock:
        info = await service.load_locked(upload_id, owner=owner)
        if info.is_final:
            raise errors.ModifyFinal()
        if info.is_complete:
            info = await _on_completed(service, info, content_length, complete=complete)
            return _appended(rules, info)
        if offset != info.offset:
            raise OffsetMismatch(expected=info.offset, provided=offset)
        length = _append_length(service, info, declared, complete, content_length)
        result = await write_body(
            service,
            request,
            lock,
            info,
            content_length=content_length,
            checksum=content_digest(service, headers) if content_length != 0 else None,
            declared_length=length,
        )
        info = await settle(service, result, complete=complete)
    return _appended(rules, info)


def _appended(rules: InteropRules, info: UploadInfo) -> Response:
    headers = {**rules.version_header(), **rules.flag(info.is_complete)}
    headers["Upload-Offset"] = str(info.offset)
    return Response(status_code=rules.append_status, headers=headers)


def _completion(rules: InteropRules, headers: Headers) -> bool:
    """The append's completion flag. Before draft -06 a missing flag meant "complete" (as
    URLSession and Apple's server read it); from -06 it is required."""
    complete = rules.completion(headers)
    if complete is not None:
        return complete
    if rules.append_flag_required:
        raise errors.CompletionRequired(f"{rules.flag_header} is required on an append")
    return True


def _is_partial_upload(value: str | None) -> bool:
    if value is None:
        return False
    return value.split(";", 1)[0].strip(" \t").lower() == PARTIAL_UPLOAD


def _append_length(
    service: UploadService,
    info: UploadInfo,
    declared: int | None,
    complete: bool,
    content_length: int | None,
) -> int | None:
    """The length this append states (``Upload-Length``, or offset + content on a completing
    request), checked against each other and the upload's; None when it states none."""
    from_content = info.offset + content_length if complete and content_length is not None else None
    stated = {v for v in (declared, from_content, info.length) if v is not None}
    if len(stated) > 1:
        raise errors.InconsistentLength(
            "Upload-Length, the completing content and the upload's length disagree"
        )
    length = next(iter(stated), None)
    if length is not None and length < info.offset:
        raise errors.InconsistentLength("the length is below the upload's offset")
    max_size = service.settings.max_size
    if length is not None and max_size and length > max_size:
        raise errors.SizeExceeded("the upload's length exceeds the maximum size")
    return length


async def _on_completed(
    service: UploadService, info: UploadInfo, content_length: int | None, *, complete: bool
) -> UploadInfo:
    """An append to a completed upload. An empty completing one is a retry whose answer was
    lost, answered again (finishing again repairs a crash before the completion record);
    anything carrying bytes is refused.

    See (docs/protocol.md, "IETF draft: disagreements and choices").
    """
    if content_length != 0 or not complete:
        raise errors.UploadCompleted()
    if info.finished_at is None:
        info = await service.finish(info)
    return info
