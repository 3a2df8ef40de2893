"""GET: download a finished upload (not part of tus; T055).

Bytes are streamed from the store's ``Reader`` capability, never loaded whole. Because the
uploader chose the name and type, the response is built to be safe to open from our origin:
the type is sanitised, only passive types are shown inline, everything else is an attachment,
and ``nosniff`` plus a sandboxing CSP stop a browser from running anything that slipped past.

The caller loads the upload (404) and routes HEAD to the tus HEAD handler, not here (T056).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.context import TusContext
from tusserver.disposition import content_disposition, is_inline_safe, safe_media_type
from tusserver.errors import MethodNotAllowed, NotFinished
from tusserver.models import UploadInfo
from tusserver.ranges import parse_range
from tusserver.storage.base import Reader

# Even an attachment gets the CSP: a user agent that renders it anyway (or a type that slipped
# through the allowlist) still runs no script and loads nothing, in an opaque origin.
_SANDBOX_CSP = "default-src 'none'; sandbox"


async def handle_get(request: Request, ctx: TusContext, info: UploadInfo) -> Response:
    reader = ctx.composer.reader
    if reader is None:
        raise MethodNotAllowed("this storage backend does not serve downloads")
    if not info.is_complete or info.length is None:
        # Serving a prefix as if it were the file would hand out a truncated download.
        raise NotFinished()
    size = info.length
    etag = f'"{info.id}-{size}"'

    media_type = safe_media_type(info.metadata.get("filetype"))
    inline = is_inline_safe(media_type)
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _SANDBOX_CSP,
    }

    # RFC 9110 §13.2.2: If-None-Match is evaluated before Range; a GET that matches is a 304.
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag, weak=True):
        return Response(status_code=304, headers=headers)

    headers["Accept-Ranges"] = "bytes"
    headers["Content-Type"] = media_type
    headers["Content-Disposition"] = content_disposition(
        info.metadata.get("filename"), inline=inline
    )

    byte_range = None
    if_range = request.headers.get("if-range")
    # If-Range: serve the range only if the client's copy is this one (strong comparison);
    # otherwise send everything (§13.1.5). A date never matches: we send no Last-Modified.
    if if_range is None or _etag_matches(if_range, etag, weak=False):
        byte_range = parse_range(request.headers.get("range"), size)  # may raise 416

    if byte_range is None:
        start, end, status = 0, size, 200
    else:
        start, end, status = byte_range[0], byte_range[1] + 1, 206
        headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
    headers["Content-Length"] = str(end - start)

    if start == end:
        # Only a zero-length upload gets here (an empty range is a 416): no read needed.
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(_stream(reader, info, start, end), status_code=status, headers=headers)


async def _stream(
    reader: Reader, info: UploadInfo, start: int, end: int
) -> AsyncGenerator[bytes, None]:
    """Yield ``[start, end)`` and close the store's iterator even if the client goes away."""
    chunks = reader.read(info, start, end)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-None-Match / If-Range value names ``etag``.

    If-None-Match takes a list or ``*`` and compares weakly (``W/"x"`` matches ``"x"``);
    If-Range takes one tag and compares strongly, so a weak tag never matches.
    """
    value = header.strip()
    if weak:
        if value == "*":
            return True
        tags = (tag.strip() for tag in value.split(","))
        return any(tag.removeprefix("W/") == etag for tag in tags)
    return value == etag
