"""Errors as RFC 9457 problem details, in the draft's problem types where it defines one.

Every error keeps its stable ``ERR_...`` code (an extension member ``code``), so a client
sees the same code whichever protocol it speaks; the draft's own types are used for the
offset mismatch, the completed upload and inconsistent lengths
(docs/protocol.md, "IETF draft: problem details").
"""

from __future__ import annotations

import json

from starlette.responses import Response

from tusserver import errors
from tusserver.ietf.versions import InteropRules

_IANA = "https://iana.org/assignments/http-problem-types#"
PROBLEM_TYPES: dict[str, str] = {
    errors.MismatchedOffset.code: _IANA + "mismatching-upload-offset",
    errors.UploadCompleted.code: _IANA + "completed-upload",
    errors.InconsistentLength.code: _IANA + "inconsistent-upload-length",
}
# tus's 460 for a failed checksum is not an HTTP status; the draft's digest section names
# none, so a failed Content-Digest is a plain 400 here.
_STATUS = {460: 400}


class OffsetMismatch(errors.MismatchedOffset):
    """409 with the draft's members: where the upload is and what the client sent."""

    def __init__(self, *, expected: int, provided: int) -> None:
        super().__init__(
            f"Upload-Offset is {provided} but the upload is at {expected}",
            headers={"Upload-Offset": str(expected)},
        )
        self.members = {"expected-offset": expected, "provided-offset": provided}


def problem_response(
    error: errors.TusError,
    rules: InteropRules | None,
    *,
    method: str,
    complete: bool | None = False,
) -> Response:
    """``error`` as ``application/problem+json`` (no body for HEAD).

    ``complete``: the completion flag the response carries. The draft wants it false on an
    append's error (the response is about the upload, not the uploaded representation);
    None leaves it out (errors before the request was understood).
    """
    status = _STATUS.get(error.status, error.status)
    body: dict[str, object] = {
        "type": PROBLEM_TYPES.get(error.code, "about:blank"),
        "title": error.message,
        "status": status,
        "code": error.code,
    }
    body.update(getattr(error, "members", {}))
    headers: dict[str, str] = {"Cache-Control": "no-store", **error.headers}
    if rules is not None:
        headers.update(rules.version_header())
        if complete is not None:
            headers.update(rules.flag(complete))
    content = b"" if method == "HEAD" else json.dumps(body).encode()
    response = Response(
        content, status_code=status, headers=headers, media_type="application/problem+json"
    )
    if method == "HEAD":
        del response.headers["content-length"]
    return response
