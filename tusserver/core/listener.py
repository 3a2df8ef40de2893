"""Upload lifecycle events, for the catalog, hooks and webhooks to subscribe to.

Owns the listener interface (created, progress, finished, terminated with a reason), the no-op
default and the fan-out that shields uploads from a failing subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol

from tusserver.models import UploadInfo

log = logging.getLogger("tusserver.upload")

# Why an upload went away: a client's DELETE, the expiry sweep, or the catalog purging the
# bytes of a file deleted from it.
TerminationReason = Literal["terminated", "expired", "purged"]


class UploadListener(Protocol):
    async def upload_created(self, info: UploadInfo) -> None: ...

    async def upload_progress(self, info: UploadInfo) -> None:
        """Bytes were stored; called at most once a second per upload (the service
        throttles), never for a complete upload (``upload_finished`` follows instead)."""
        ...

    async def upload_finished(self, info: UploadInfo) -> None:
        """A whole, non-partial upload is complete. May be called again for the same id
        (a crash between finishing and recording); listeners must be idempotent."""
        ...

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None: ...


class NullListener:
    """The default: nobody subscribed. (Events are logged by the upload service itself, which
    knows when an event really happened, e.g. not for a creation refused by its checksum.)"""

    async def upload_created(self, info: UploadInfo) -> None:
        return None

    async def upload_progress(self, info: UploadInfo) -> None:
        return None

    async def upload_finished(self, info: UploadInfo) -> None:
        return None

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None:
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

    async def upload_progress(self, info: UploadInfo) -> None:
        for listener in self._listeners:
            # Optional at run time: a listener written before progress existed is skipped
            # rather than failing (and logging a traceback) every second of every upload.
            progress = getattr(listener, "upload_progress", None)
            if progress is None:
                continue
            try:
                await progress(info)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})

    async def upload_finished(self, info: UploadInfo) -> None:
        for listener in self._listeners:
            try:
                await listener.upload_finished(info)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None:
        for listener in self._listeners:
            try:
                if reason == "terminated":
                    # The default, so omitting it means the same to a conforming listener,
                    # and one written before reasons existed keeps hearing client DELETEs.
                    await listener.upload_terminated(info)
                else:
                    await listener.upload_terminated(info, reason=reason)
            except Exception:
                log.exception("listener.failed", extra={"upload_id": info.id})
