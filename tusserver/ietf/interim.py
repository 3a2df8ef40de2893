"""The ``104 (Upload Resumption Supported)`` interim response, through an ASGI extension.

ASGI has no standard informational responses. The project's uvicorn protocol class offers
``scope["extensions"]["http.response.informational"]``; under a server without it (an
embedding host's own uvicorn) nothing is sent and the upload works as before, only without
early resumption (docs/protocol.md, "IETF draft: the 104 response").
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Scope, Send

INFORMATIONAL = "http.response.informational"
UPLOAD_RESUMPTION_SUPPORTED = 104


def can_send_interim(scope: Scope) -> bool:
    """The extension is offered, and the client is not HTTP/1.0 (which cannot parse a 1xx)."""
    extensions = scope.get("extensions") or {}
    return INFORMATIONAL in extensions and scope.get("http_version") != "1.0"


async def send_resumption_supported(scope: Scope, send: Send, headers: Mapping[str, str]) -> bool:
    """Send the 104 with ``headers`` if the server can; whether it was sent.

    Must be awaited before the request body is first received: that is what lets a client
    whose connection drops mid-body resume through the ``Location`` it carries.
    """
    if not can_send_interim(scope):
        return False
    await send(
        {
            "type": INFORMATIONAL,
            "status": UPLOAD_RESUMPTION_SUPPORTED,
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
            ],
        }
    )
    return True
