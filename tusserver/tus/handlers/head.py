"""HEAD: where an upload stands (docs/protocol.md, "Offset retrieval").

Once the caller is known to own the upload (never before: a refused caller must not cut off the
owner's PATCH), it takes the upload's lock, so an older PATCH still holding it (a dead connection)
is asked to persist its bytes and let go; the offset answered is then exactly what the next PATCH
must send (docs/protocol.md, "Busy uploads and the release request"). A busy upload is 423, never
5xx: tus-js-client abandons an upload on a 5xx HEAD
(docs/protocol.md, "Busy uploads and the release request").
"""

from __future__ import annotations

from starlette.responses import Response

from tusserver.core.uploads import UploadService
from tusserver.models import UploadInfo
from tusserver.tus.handlers.common import expires_header


def upload_headers(info: UploadInfo) -> dict[str, str]:
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    pending_final = info.is_final and info.finished_at is None
    if not pending_final:
        # A final whose partials are unfinished has no offset yet (protocol#73;
        # docs/protocol.md, "Concatenation").
        headers["Upload-Offset"] = str(info.offset)
    if info.length is not None:
        headers["Upload-Length"] = str(info.length)
    else:
        headers["Upload-Defer-Length"] = "1"
    if info.metadata_raw:
        # Verbatim, as the client sent it (docs/protocol.md, "Upload-Metadata strictness").
        headers["Upload-Metadata"] = info.metadata_raw
    if info.is_partial:
        headers["Upload-Concat"] = "partial"
    elif info.is_final and info.concat_raw is not None:
        # As received (docs/protocol.md, "Concatenation").
        headers["Upload-Concat"] = info.concat_raw
    headers.update(expires_header(info))
    return headers


async def handle_head(service: UploadService, upload_id: str, *, owner: str | None) -> Response:
    async with service.locked_for(upload_id, owner=owner):
        info = await service.load_locked(upload_id, owner=owner)
        info = await service.assemble_if_ready(info)
        if info.is_complete and info.finished_at is None and not info.is_final:
            # Every byte is stored but finishing failed (S3 down at CompleteMultipartUpload,
            # a crash): a client that sees offset == length sends nothing more, so the HEAD
            # finishes it, as a repeated final PATCH would. Still failing: 503, not "done".
            info = await service.finish(info)
    response = Response(status_code=200, headers=upload_headers(info))
    # A HEAD describes no body of its own; a Content-Length of 0 would contradict GET
    # (docs/protocol.md, "Offset retrieval").
    del response.headers["content-length"]
    return response
