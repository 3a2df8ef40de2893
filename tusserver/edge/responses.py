"""The one place errors become HTTP responses, and the header names we emit."""

from __future__ import annotations

from starlette.responses import Response

from tusserver import TUS_VERSION
from tusserver.errors import TusError


def error_response(error: TusError, *, method: str = "GET") -> Response:
    """``ERR_CODE: message`` as text/plain (tusd's shape); HEAD responses carry no body."""
    # no-store: a 404 or 423 describes a moment, not the resource; never let a cache keep it.
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **error.headers}
    if error.status == 412:
        headers["Tus-Version"] = TUS_VERSION
    body = b"" if method == "HEAD" else f"{error.code}: {error.message}\n".encode()
    response = Response(body, status_code=error.status, headers=headers, media_type="text/plain")
    if method == "HEAD":
        # Starlette sets Content-Length from the (empty) body; a HEAD response describes no body.
        del response.headers["content-length"]
    return response
