"""Appending a request body to an upload: the step PATCH and creation-with-upload share.

Both handlers check the request with these helpers before the first ``receive()``, open the
body with :func:`open_body`, await ``UploadService.write`` themselves, and turn an early end
of the body into an answer with :func:`raise_for_end`. The helpers are plain functions on
purpose: the write is awaited directly by the handler, so sharing the step adds no coroutine
between the store and each body chunk.
"""

from __future__ import annotations

from starlette.requests import Request

from tusserver import errors
from tusserver.core.uploads import UploadService, WriteResult
from tusserver.edge.body import BodyEnd, BodyReader
from tusserver.models import UploadInfo
from tusserver.state.base import LockHandle
from tusserver.tus.protocol import Checksum, new_hasher, parse_checksum


def parse_checksum_header(service: UploadService, raw: str | None) -> Checksum | None:
    """The ``Upload-Checksum`` header, refused when this server does not verify checksums."""
    if raw is None:
        return None
    if not service.features.checksum:
        raise errors.UnsupportedChecksum("this server does not verify checksums")
    return parse_checksum(raw, service.settings.checksum_algorithms)


def body_limit(
    service: UploadService, info: UploadInfo, length: int | None, content_length: int | None
) -> int | None:
    """How many more bytes this upload may take; 413 up front when the body cannot fit
    (docs/protocol.md, "Appending")."""
    max_size = service.settings.max_size
    if length is not None:
        limit: int | None = length - info.offset
    elif max_size:
        limit = (
            max_size - info.offset
        )  # a deferred upload may not pass the maximum (docs/protocol.md, "Limits")
    else:
        limit = None
    if content_length is not None and limit is not None and content_length > limit:
        raise errors.SizeExceeded("the body would pass the upload's length or the maximum size")
    return limit


def open_body(
    service: UploadService,
    request: Request,
    lock: LockHandle,
    *,
    limit: int | None,
    checksum: Checksum | None,
) -> BodyReader:
    """The request body as a reader the lock can interrupt, hashing it if a checksum came.

    Another request asking for the upload's lock ends this body early (the store keeps what
    arrived), so a stalled client cannot hold the upload.
    """
    reader = BodyReader(
        request.receive,
        limit=limit,
        read_timeout=service.settings.read_timeout,
        hasher=new_hasher(checksum.algorithm) if checksum is not None else None,
    )
    lock.on_release_request(reader.interrupt)
    return reader


def raise_for_end(result: WriteResult, *, shutting_down: bool = False) -> None:
    """Turn an early end of the body into the answer the client (if still there) gets."""
    if result.checksum_failed:
        raise errors.ChecksumMismatch()
    if result.end is BodyEnd.TOO_LARGE:
        raise errors.SizeExceeded("the body passed the upload's length or the maximum size")
    if result.end is BodyEnd.RELEASED:
        if shutting_down:
            # Retryable: tus clients HEAD and resume, through the balancer, elsewhere.
            raise errors.ShuttingDown(headers={"Connection": "close", "Retry-After": "1"})
        raise errors.Interrupted()
    if result.end is BodyEnd.TIMED_OUT:
        raise errors.ReadTimeout()
    if result.end is BodyEnd.DISCONNECTED:
        raise errors.Interrupted("the client disconnected")
