"""Upload lifecycle events, for the catalog, hooks and webhooks to subscribe to."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from tusserver.models import UploadInfo

log = logging.getLogger("tusserver.upload")


class UploadListener(Protocol):
    async def upload_created(self, info: UploadInfo) -> None: ...

    async def upload_finished(self, info: UploadInfo) -> None:
        """A whole, non-partial upload is complete. May be called again for the same id
        (a crash between finishing and recording); listeners must be idempotent."""
        ...

    async def upload_terminated(self, info: UploadInfo) -> None: ...


class NullListener:
    """The default: nobody subscribed. (Events are logged by the upload service itself, which
    knows when an event really happened, e.g. not for a creation refused by its checksum.)"""

    async def upload_created(self, info: UploadInfo) -> None:
        return None

    async def upload_finished(self, info: UploadInfo) -> None:
        return None

    async def upload_terminated(self, info: UploadInfo) -> None:
        return None


class FanOut:
    """Delivers each event to several listeners in order; one failing does not stop the rest."""

    def __init__(self, listeners: Sequence[UploadListener]) -> None:
        self._listeners = tuple(listeners)

    async def upload_created(self, info: UploadInfo) -> None:
        for listener in self._listeners:
            try:
                await listener.upload_created(info)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})

    async def upload_finished(self, info: UploadInfo) -> None:
        for listener in self._listeners:
            try:
                await listener.upload_finished(info)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})

    async def upload_terminated(self, info: UploadInfo) -> None:
        for listener in self._listeners:
            try:
                await listener.upload_terminated(info)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})
