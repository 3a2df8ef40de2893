"""DELETE: the termination extension (docs/protocol.md, "Termination").

Taking the lock (only once the caller is known to own the upload) asks an in-flight PATCH to stop
first, so Uppy removing a file mid-upload gets its 204 promptly
(docs/protocol.md, "Busy uploads and the release request").
"""

from __future__ import annotations

from starlette.responses import Response

from tusserver.core.uploads import UploadService


async def handle_delete(service: UploadService, upload_id: str, *, owner: str | None) -> Response:
    async with service.locked_for(upload_id, owner=owner):
        info = await service.load_locked(upload_id, owner=owner)
        await service.terminate(info)
    return Response(status_code=204)
