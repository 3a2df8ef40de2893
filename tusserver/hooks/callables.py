"""Hooks as plain async Python functions, for an application that embeds us.

Owns adapting two functions a host passes to ``tusserver.embed``:

- a pre-create function, ``(NewUpload) -> metadata to add | None``, asked before every
  upload is created (tus ``POST`` and the REST API, like the pre-create URL hook). Raising
  ``errors.UploadRejected(message, status=4xx)`` refuses the upload with that status; any
  other exception, or metadata that is not tus-valid, refuses it with 503 and is logged: the
  gate fails closed, as the URL hook does;
- a post-finish function, ``(UploadInfo) -> None``, called once an upload is complete. It is
  an ``UploadListener``: it may be called again for the same upload after a crash (so it must
  be idempotent), and its exceptions are logged, never failing the upload whose bytes are
  already safe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tusserver import errors
from tusserver.core.listener import TerminationReason
from tusserver.hooks.precreate import checked_metadata, safe_message
from tusserver.models import UploadInfo

log = logging.getLogger("tusserver.hooks")


@dataclass(frozen=True)
class NewUpload:
    """An upload about to be created, as a pre-create function sees it."""

    owner: str | None
    # None while the length is deferred.
    length: int | None
    metadata: Mapping[str, str | None] = field(default_factory=dict)
    # "none", "partial" or "final" (docs/protocol.md, "Concatenation").
    concat: str = "none"
    partials: tuple[str, ...] = ()


PreCreateFn = Callable[[NewUpload], Awaitable[Mapping[str, str] | None]]
PostFinishFn = Callable[[UploadInfo], Awaitable[None]]


class PreCreateFunction:
    """The pre-create gate (``Hooks.pre_create``) over a host's function."""

    def __init__(self, screen: PreCreateFn) -> None:
        self._screen = screen

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PreCreateFunction]:
        yield self  # nothing to open: the host owns whatever its function uses

    async def screen(self, upload: Mapping[str, Any]) -> dict[str, str]:
        proposed = NewUpload(
            owner=upload["owner"],
            length=upload["length"],
            metadata=dict(upload["metadata"]),
            concat=upload["concat"],
            partials=tuple(upload["partials"]),
        )
        try:
            added: object = await self._screen(proposed)
        except errors.UploadRejected as refusal:
            raise _client_refusal(refusal) from None
        except Exception:
            log.exception("pre_create.failed")
            raise errors.HookUnavailable() from None
        try:
            return checked_metadata(dict(added) if isinstance(added, Mapping) else added)
        except ValueError as exc:
            log.error("pre_create.invalid_response", extra={"reason": str(exc)})
            raise errors.HookUnavailable() from None


def _client_refusal(refusal: errors.UploadRejected) -> errors.UploadRejected:
    """The refusal as the client sees it: a 4xx (403 otherwise) and a one-line message."""
    status = refusal.status if 400 <= refusal.status < 500 else 403
    return errors.UploadRejected(safe_message(refusal.message), status=status)


class PostFinishListener:
    """An ``UploadListener`` that calls the host's function when an upload completes."""

    def __init__(self, finished: PostFinishFn) -> None:
        self._finished = finished

    async def upload_created(self, info: UploadInfo) -> None:
        return None

    async def upload_progress(self, info: UploadInfo) -> None:
        return None

    async def upload_finished(self, info: UploadInfo) -> None:
        await self._finished(info)

    async def upload_terminated(
        self, info: UploadInfo, *, reason: TerminationReason = "terminated"
    ) -> None:
        return None
