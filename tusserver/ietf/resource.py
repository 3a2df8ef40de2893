"""Offset retrieval (HEAD), cancellation (DELETE) and discovery (OPTIONS) in the draft's shape
(docs/protocol.md, "IETF draft: offset retrieval, cancellation and discovery").

HEAD and DELETE take the upload's lock only once the caller is known to own it, as tus's do:
an older request still holding it (a dead connection) is asked to store what arrived and let
go, so the offset answered is the one the next append must send.
"""

from __future__ import annotations

from starlette.responses import Response

from tusserver.core.uploads import UploadService
from tusserver.ietf.limits import limit_header
from tusserver.ietf.versions import PARTIAL_UPLOAD, InteropRules
from tusserver.security.principal import Principal


async def handle_offset(
    service: UploadService, rules: InteropRules, upload_id: str, *, principal: Principal
) -> Response:
    owner = principal.owner_filter
    async with service.locked_for(upload_id, owner=owner):
        info = await service.load_locked(upload_id, owner=owner)
        if info.is_complete and info.finished_at is None and not info.is_final:
            # Every byte is stored but finishing failed: finish now, as tus's HEAD does.
            info = await service.finish(info)
    headers = {
        "Cache-Control": "no-store",
        **rules.version_header(),
        **rules.flag(info.is_complete),
        "Upload-Offset": str(info.offset),
        **limit_header(service, rules, info, principal),
    }
    if info.length is not None:
        headers["Upload-Length"] = str(info.length)
    return Response(status_code=rules.head_status, headers=headers)


async def handle_cancel(
    service: UploadService, rules: InteropRules, upload_id: str, *, owner: str | None
) -> Response:
    async with service.locked_for(upload_id, owner=owner):
        info = await service.load_locked(upload_id, owner=owner)
        await service.terminate(info)
    return Response(status_code=rules.delete_status, headers=rules.version_header())


def handle_options(service: UploadService, rules: InteropRules, principal: Principal) -> Response:
    """200 with the limits that apply to a new upload (``min-size=0`` when there are none)."""
    headers = {**rules.version_header(), **limit_header(service, rules, None, principal)}
    if rules.accept_patch:
        headers["Accept-Patch"] = PARTIAL_UPLOAD
    return Response(status_code=200, headers=headers)
