"""S3 failures as the errors the rest of the server understands.

Used around every S3 request, by the store and by direct uploads alike:

* ``translated``: a missing upload or object is ``FileNotFoundError`` (what the store
  contract means by "data missing"); outages, throttling and 5xx are ``StorageUnavailable``
  (503); any other 4xx passes through for the caller to judge;
* ``refusals``: around ``translated`` for requests carrying the upload's object metadata, so
  such a 4xx is a clear error (400 or 503), never a 500;
* ``spooling``: a failure of the local disk a part spills to (507 when full, else 503).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from tusserver import errors

log = logging.getLogger("tusserver.storage")

MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "NotFound", "404"})
_TRANSIENT = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "NoSuchBucket"}
)
# What S3 (or a server in front of it) answers when a request's metadata or headers are
# larger than it takes.
_TOO_LARGE = frozenset({"MetadataTooLarge", "RequestHeaderSectionTooLarge"})


def error_code(exc: ClientError) -> tuple[str, int]:
    """S3's error code and HTTP status of a failed request ('' and 0 when absent)."""
    error: Any = exc.response.get("Error", {})
    meta: Any = exc.response.get("ResponseMetadata", {})
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn S3 failures into the errors the rest of the server understands."""
    try:
        yield
    except ClientError as exc:
        code, status = error_code(exc)
        if code in _TRANSIENT or status >= 500:
            raise errors.StorageUnavailable() from exc
        if code in MISSING or status == 404:
            raise FileNotFoundError(f"{what}: {code or status}") from exc
        raise
    except FileNotFoundError:
        raise
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise errors.StorageUnavailable() from exc


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """Around ``translated``, for requests that carry the upload's object metadata: any
    other 4xx from S3 is a clear error, never a 500. A refusal of the metadata's size is the
    client's to fix (400); anything else (access denied, a bad SSE setting) is the
    operator's, and the client can only retry later (503). Both are logged with S3's code."""
    try:
        yield
    except ClientError as exc:
        code, status = error_code(exc)
        log.warning("storage.refused", extra={"operation": what, "code": code, "status": status})
        if code in _TOO_LARGE or status in (413, 431):
            raise errors.MetadataTooLarge("the storage refused the upload's metadata") from exc
        raise errors.StorageUnavailable() from exc


@contextlib.contextmanager
def spooling() -> Iterator[None]:
    """A failure of the local spool is never a ``FileNotFoundError`` taken for missing upload
    data: a full disk or quota is ``InsufficientStorage`` (507), anything else (directory
    gone) an outage of this store (503). The client retries either."""
    try:
        yield
    except OSError as exc:
        log.warning(
            "storage.spool_failed",
            extra={"error": type(exc).__name__, "errno": exc.errno},
        )
        full = errors.storage_full(exc)
        if full is not None:
            raise full from exc
        raise errors.StorageUnavailable() from exc
