"""The ``104 (Upload Resumption Supported)`` interim response.

ASGI has no standard informational responses; the HTTP edge's extension
(``tusserver.edge.informational``) sends one where the server offers it. Under a server without
it (an embedding host's own uvicorn) nothing is sent and the upload works as before, only
without early resumption (docs/protocol.md, "IETF draft: the 104 response").
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Scope, Send

from tusserver.edge import informational

INFORMATIONAL = informational.MESSAGE_TYPE
UPLOAD_RESUMPTION_SUPPORTED = 104


async def send_resumption_supported(scope: Scope, send: Send, headers: Mapping[str, str]) -> bool:
    """Send the 104 with ``headers`` if the server can; whether it was sent.

    Must be awaited before the request body is first received: that is what lets a client
    whose connection drops mid-body resume through the ``Location`` it carries.
    """
    pairs = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    return await informational.send_informational(scope, send, UPLOAD_RESUMPTION_SUPPORTED, pairs)
