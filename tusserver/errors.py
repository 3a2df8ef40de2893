"""The error family: every failure the server reports has a stable code and an HTTP status.

Handlers raise these; one renderer (``tusserver.edge.responses``) turns them into responses, so a
client sees the same ``ERR_...`` code for the same problem on every route.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Mapping


class TusError(Exception):
    """Base class. ``code`` is stable and documented; ``message`` is for humans."""

    status: int = 500
    code: str = "ERR_INTERNAL_SERVER_ERROR"
    message: str = "internal server error"

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.message = message or type(self).message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)


# 4xx: the client's request cannot be served as sent.


class UnsupportedVersion(TusError):
    status = 412
    code = "ERR_UNSUPPORTED_VERSION"
    message = "unsupported Tus-Resumable version"


class Unauthorized(TusError):
    status = 401
    code = "ERR_UNAUTHORIZED"
    message = "a valid bearer token is required"


class NotFound(TusError):
    status = 404
    code = "ERR_UPLOAD_NOT_FOUND"
    message = "upload not found"


class MethodNotAllowed(TusError):
    status = 405
    code = "ERR_METHOD_NOT_ALLOWED"
    message = "method not allowed"


class InvalidContentType(TusError):
    status = 415
    code = "ERR_INVALID_CONTENT_TYPE"
    message = "Content-Type must be application/offset+octet-stream"


class InvalidOffset(TusError):
    status = 400
    code = "ERR_INVALID_OFFSET"
    message = "invalid Upload-Offset header"


class MismatchedOffset(TusError):
    status = 409
    code = "ERR_MISMATCHED_OFFSET"
    message = "Upload-Offset does not match the upload"


class InvalidLength(TusError):
    status = 400
    code = "ERR_INVALID_UPLOAD_LENGTH"
    message = "invalid Upload-Length header"


class InvalidDeferLength(TusError):
    status = 400
    code = "ERR_INVALID_UPLOAD_LENGTH_DEFER"
    message = "Upload-Defer-Length must be 1"


class AmbiguousLength(TusError):
    status = 400
    code = "ERR_AMBIGUOUS_UPLOAD_LENGTH"
    message = "send either Upload-Length or Upload-Defer-Length, not both"


class LengthRequired(TusError):
    status = 400
    code = "ERR_UPLOAD_LENGTH_REQUIRED"
    message = "Upload-Length or Upload-Defer-Length is required"


class LengthChanged(TusError):
    status = 400
    code = "ERR_UPLOAD_LENGTH_CHANGED"
    message = "the upload length is already set and cannot be changed"


class DeferNotSupported(TusError):
    status = 400
    code = "ERR_DEFER_LENGTH_UNSUPPORTED"
    message = "this server does not support deferred lengths"


class SizeExceeded(TusError):
    status = 413
    code = "ERR_UPLOAD_SIZE_EXCEEDED"
    message = "the upload exceeds its length or the maximum size"


class InvalidMetadata(TusError):
    status = 400
    code = "ERR_INVALID_METADATA"
    message = "invalid Upload-Metadata header"


class MetadataTooLarge(TusError):
    status = 400
    code = "ERR_METADATA_TOO_LARGE"
    message = "Upload-Metadata is too large"


class HeadersTooLarge(TusError):
    # Sent by the HTTP protocol layer, before any route runs (see tusserver.edge.httpproto).
    status = 431
    code = "ERR_HEADERS_TOO_LARGE"
    message = "the request line and headers are too large"


class HeaderTimeout(TusError):
    # Sent by the HTTP protocol layer to a client whose request head stalled.
    status = 408
    code = "ERR_HEADER_TIMEOUT"
    message = "timed out waiting for the request line and headers"


class InvalidConcat(TusError):
    status = 400
    code = "ERR_INVALID_CONCAT"
    message = "invalid Upload-Concat header"


class ConcatUnsupported(TusError):
    status = 400
    code = "ERR_CONCATENATION_UNSUPPORTED"
    message = "this server does not support concatenation"


class ModifyFinal(TusError):
    status = 403
    code = "ERR_MODIFY_FINAL"
    message = "a final concatenated upload cannot be modified"


class DuplicateHeader(TusError):
    status = 400
    code = "ERR_DUPLICATE_HEADER"
    message = "a header that may appear once was sent twice with different values"


class InvalidChecksum(TusError):
    status = 400
    code = "ERR_INVALID_CHECKSUM"
    message = "invalid Upload-Checksum header"


class UnsupportedChecksum(TusError):
    status = 400
    code = "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM"
    message = "unsupported checksum algorithm"


class ChecksumMismatch(TusError):
    status = 460
    code = "ERR_CHECKSUM_MISMATCH"
    message = "the body does not match Upload-Checksum"


class Locked(TusError):
    status = 423
    code = "ERR_UPLOAD_LOCKED"
    message = "the upload is in use; retry shortly"


class Interrupted(TusError):
    status = 423
    code = "ERR_UPLOAD_INTERRUPTED"
    message = "this request was stopped because another request took over the upload; retry"


class LockLost(TusError):
    status = 423
    code = "ERR_UPLOAD_LOCK_LOST"
    message = "this request lost the upload's lock (the server stalled) and stopped; retry"


class NotFinished(TusError):
    status = 409
    code = "ERR_UPLOAD_NOT_FINISHED"
    message = "the upload is not finished"


class RangeNotSatisfiable(TusError):
    status = 416
    code = "ERR_RANGE_NOT_SATISFIABLE"
    message = "requested range not satisfiable"


class OriginNotAllowed(TusError):
    status = 403
    code = "ERR_ORIGIN_NOT_ALLOWED"
    message = "origin not allowed"


class BadRequest(TusError):
    status = 400
    code = "ERR_BAD_REQUEST"
    message = "bad request"


class UploadRejected(TusError):
    """The pre-create hook refused the upload; the client gets the hook's 4xx status."""

    status = 403
    code = "ERR_UPLOAD_REJECTED"
    message = "the upload was rejected by the server's upload policy"

    def __init__(self, message: str | None = None, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


# The JSON API (catalog, and later the REST wrapper) shares the family; its bodies are JSON.


class ValidationFailed(TusError):
    status = 422
    code = "ERR_VALIDATION"
    message = "the request's parameters or body are invalid"


class FileNotFound(TusError):
    status = 404
    code = "ERR_FILE_NOT_FOUND"
    message = "file not found"


class JsonRequired(TusError):
    status = 415
    code = "ERR_JSON_REQUIRED"
    message = "the request body must be application/json"


class PayloadTooLarge(TusError):
    status = 413
    code = "ERR_PAYLOAD_TOO_LARGE"
    message = "the request body is too large"


class BodyIncomplete(TusError):
    status = 400
    code = "ERR_BODY_INCOMPLETE"
    message = "the connection ended before the whole request body arrived"


class JsonTooDeep(TusError):
    status = 400
    code = "ERR_JSON_TOO_DEEP"
    message = "the JSON body is nested too deeply"


class InvalidText(TusError):
    status = 400
    code = "ERR_INVALID_TEXT"
    message = "text must be UTF-8 without NUL characters or lone surrogates"


# Limits, idempotency and the REST upload API (``/api/v1/uploads``).


class ContentTypeNotAllowed(TusError):
    status = 415
    code = "ERR_CONTENT_TYPE_NOT_ALLOWED"
    message = "the declared content type is not allowed on this server"


class RateLimited(TusError):
    status = 429
    code = "ERR_RATE_LIMITED"
    message = "too many requests; retry after the time in Retry-After"


class InvalidIdempotencyKey(TusError):
    status = 400
    code = "ERR_INVALID_IDEMPOTENCY_KEY"
    message = "Idempotency-Key must be 1 to 255 printable ASCII characters"


class IdempotencyKeyReused(TusError):
    status = 422
    code = "ERR_IDEMPOTENCY_KEY_REUSED"
    message = "this Idempotency-Key was already used for a different request"


class IdempotencyInProgress(TusError):
    status = 409
    code = "ERR_IDEMPOTENCY_IN_PROGRESS"
    message = "a request with this Idempotency-Key is still in progress; retry shortly"


class UploadIncomplete(TusError):
    status = 409
    code = "ERR_UPLOAD_INCOMPLETE"
    message = "the upload has not received all its bytes yet"


class DurationExceeded(TusError):
    status = 422
    code = "ERR_DURATION_EXCEEDED"
    message = "the media is longer than this server allows"


# Direct-to-storage uploads (``/api/v1/uploads/presigned``, ``/multipart``, ``/direct``).


class Forbidden(TusError):
    status = 403
    code = "ERR_FORBIDDEN"
    message = "this action needs administrator rights"


class SignatureInvalid(TusError):
    status = 403
    code = "ERR_SIGNATURE_INVALID"
    message = "the URL's signature is invalid"


class UrlExpired(TusError):
    status = 403
    code = "ERR_URL_EXPIRED"
    message = "the signed URL has expired; ask for a new one"


class ContentTypeMismatch(TusError):
    status = 415
    code = "ERR_CONTENT_TYPE_MISMATCH"
    message = "Content-Type must be the type the URL was signed for"


class InvalidUploadState(TusError):
    status = 409
    code = "ERR_INVALID_UPLOAD_STATE"
    message = "the upload's status does not allow this"


class SizeMismatch(TusError):
    status = 422
    code = "ERR_SIZE_MISMATCH"
    message = "the stored bytes do not have the declared size"


# Delivery (``/api/v1/delivery``, ``/d/{token}``).


class InvalidKey(TusError):
    status = 400
    code = "ERR_INVALID_KEY"
    message = "the storage key is not allowed"


class TokenNotFound(TusError):
    status = 404
    code = "ERR_TOKEN_NOT_FOUND"
    message = "the token is unknown, expired or already used"


# 5xx: our side failed; clients retry these.


class ReadTimeout(TusError):
    status = 500
    code = "ERR_READ_TIMEOUT"
    message = "timed out waiting for the request body"


class StorageUnavailable(TusError):
    status = 503
    code = "ERR_STORAGE_UNAVAILABLE"
    message = "storage is temporarily unavailable"


class CatalogUnavailable(TusError):
    status = 503
    code = "ERR_CATALOG_UNAVAILABLE"
    message = "the catalog database is temporarily unavailable"


class HookUnavailable(TusError):
    status = 503
    code = "ERR_HOOK_UNAVAILABLE"
    message = "the upload could not be checked against the server's upload policy; retry"


class InsufficientStorage(TusError):
    """The disk (or quota, or database) is full. 507 rather than a 4xx: a full disk is usually
    temporary (the sweeper frees expired uploads, an operator adds room), and tus clients
    retry every status outside 4xx (except 409 and 423) with backoff, then resume from HEAD."""

    status = 507
    code = "ERR_INSUFFICIENT_STORAGE"
    message = "the server's storage is full; retry later"

    def __init__(
        self, message: str | None = None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, headers={"Retry-After": "30", **(headers or {})})


class ShuttingDown(TusError):
    status = 503
    code = "ERR_SHUTTING_DOWN"
    message = "the server is shutting down; retry"


# ENOSPC: the file system is full; EDQUOT: this user's quota is, which looks the same to a client.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Postgres' SQLSTATE disk_full ("could not extend file").
_PG_DISK_FULL = "53100"


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, InsufficientStorage):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(exc, "sqlstate", None) == _PG_DISK_FULL


def storage_full(exc: BaseException) -> InsufficientStorage | None:
    """The 507 for ``exc`` if it (or what it wraps) says the disk, quota or database is full.

    Wrappers are followed: ``raise ... from`` chains, and the driver error SQLAlchemy keeps in
    ``orig`` (SQLite's "database or disk is full", Postgres' disk_full).
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _is_full(current):
            return current if isinstance(current, InsufficientStorage) else InsufficientStorage()
        orig = getattr(current, "orig", None)
        pending.append(orig if isinstance(orig, BaseException) else None)
        pending.append(current.__cause__)
    return None


def error_table() -> str:
    """The README table of error codes, from the classes above."""
    rows = ["| code | status | meaning |", "| --- | --- | --- |"]
    seen: set[str] = set()
    classes: list[type[TusError]] = [TusError, *TusError.__subclasses__()]
    for cls in classes:
        if cls.code in seen:
            continue
        seen.add(cls.code)
        rows.append(f"| `{cls.code}` | {cls.status} | {cls.message} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(error_table())
