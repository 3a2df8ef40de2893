"""OPTIONS: discovery of the protocol version, extensions and limits.

See (docs/protocol.md, "Discovery").
"""

from __future__ import annotations

from starlette.responses import Response

from tusserver import TUS_VERSION
from tusserver.core.uploads import UploadService


def discovery_headers(service: UploadService) -> dict[str, str]:
    """Computed from the store composer's capabilities, never hand-listed.

    Lists carry no spaces: TUSKit splits on "," without trimming (docs/protocol.md, "Discovery").
    """
    headers = {"Tus-Version": TUS_VERSION, "Tus-Resumable": TUS_VERSION}
    if service.extensions:
        headers["Tus-Extension"] = ",".join(service.extensions)
    if service.settings.max_size:
        headers["Tus-Max-Size"] = str(service.settings.max_size)
    if service.features.checksum:
        headers["Tus-Checksum-Algorithm"] = ",".join(service.settings.checksum_algorithms)
    return headers


async def handle_options(service: UploadService) -> Response:
    # 200 rather than 204: some old browsers reject a 204 preflight (docs/protocol.md, "Discovery").
    return Response(status_code=200, headers=discovery_headers(service))
