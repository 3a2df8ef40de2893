"""GET: download a finished upload (not part of tus; docs/protocol.md, "Downloads").

Because the uploader chose the name and type, the response is built to be safe to open from
our origin: the type is sanitised, only passive types are shown inline, everything else is an
attachment (``tusserver.edge.download`` adds ``nosniff`` and a sandboxing CSP).

The caller loads the upload (404) and routes HEAD to the tus HEAD handler, not here
(docs/protocol.md, "Routing and 405").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tusserver.core.context import TusContext
from tusserver.edge.disposition import content_disposition, is_inline_safe, safe_media_type
from tusserver.edge.download import serve_bytes
from tusserver.errors import MethodNotAllowed, NotFinished
from tusserver.models import UploadInfo


async def handle_get(request: Request, ctx: TusContext, info: UploadInfo) -> Response:
    reader = ctx.composer.reader
    if reader is None:
        raise MethodNotAllowed("this storage backend does not serve downloads")
    if not info.is_complete or info.length is None or info.finished_at is None:
        # Serving a prefix as if it were the file would hand out a truncated download; and
        # all bytes stored but not yet finished (S3's CompleteMultipartUpload failed) means
        # no object to read yet: the next HEAD or PATCH finishes it.
        raise NotFinished()
    media_type = safe_media_type(info.metadata.get("filetype"))
    disposition = content_disposition(
        info.metadata.get("filename"), inline=is_inline_safe(media_type)
    )
    return serve_bytes(
        request, reader, info, size=info.length, media_type=media_type, disposition=disposition
    )
