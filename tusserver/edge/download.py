"""Serving a stored file's bytes over HTTP: Range (206/416), ETag, If-None-Match (304),
If-Range, HEAD, and headers that make it safe to open from our origin.

Bytes stream from the store's ``Reader``, never loaded whole. Used by the tus GET and by the
signed download route, which differ only in where the type and the disposition come from.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.edge.ranges import parse_range
from tusserver.models import UploadInfo
from tusserver.storage.base import Reader

# Even an attachment gets the CSP: a user agent that renders it anyway (or a type that slipped
# through the allowlist) still runs no script and loads nothing, in an opaque origin.
SANDBOX_CSP = "default-src 'none'; sandbox"


def serve_bytes(
    request: Request,
    reader: Reader,
    info: UploadInfo,
    *,
    size: int,
    media_type: str,
    disposition: str,
    cache_control: str = "private, no-cache",
) -> Response:
    """The response for a GET or HEAD of ``info``'s ``size`` bytes (``media_type`` and
    ``disposition`` already sanitized by the caller)."""
    etag = f'"{info.id}-{size}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX_CSP,
    }
    # RFC 9110 §13.2.2: If-None-Match is evaluated before Range; a GET that matches is a 304.
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag, weak=True):
        return Response(status_code=304, headers=headers)

    headers["Accept-Ranges"] = "bytes"
    headers["Content-Type"] = media_type
    headers["Content-Disposition"] = disposition

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

    if start == end or request.method == "HEAD":
        # HEAD: the same headers, no body. An empty file: nothing to read.
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(stream(reader, info, start, end), status_code=status, headers=headers)


async def stream(
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
