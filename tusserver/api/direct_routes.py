"""The HTTP surface of direct-to-storage uploads, under ``/api/v1/uploads``.

* ``POST /presigned`` → one signed PUT URL; ``GET /presigned/{id}``;
  ``POST /presigned/{id}/complete`` | ``/abort``.
* ``POST /multipart`` → part size, count and part URLs; ``GET /multipart/{id}`` (status and
  the parts storage holds); ``GET /multipart/{id}/parts/{n}`` (a fresh URL for one part);
  ``POST /multipart/{id}/complete`` ``{"parts": [{"part_number", "etag"}]}`` | ``/abort``.
* ``POST /direct?filename=...`` (admins): a small file (≤ 10 MiB) as the raw body.
* ``PUT /direct-parts/{token}`` (local storage): where locally signed URLs point; public,
  the token is the credential, and it answers with an S3-like ``ETag``.

Creates honour ``Idempotency-Key``. Bodies are validated (422 names the field, never echoes
it); someone else's upload is 404 on every route.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from catalog.db import unavailable_errors
from catalog.routes import file_json
from tusserver import errors
from tusserver.api.direct_backend import CompletedPart, Target
from tusserver.api.direct_local import PART_PATH
from tusserver.api.direct_service import MAX_SMALL, DirectUploads, NewUpload
from tusserver.api.direct_state import DirectUpload, Kind
from tusserver.api.part_tokens import MAX_PART_NUMBER
from tusserver.edge.body import BodyEnd, BodyReader
from tusserver.edge.idempotent_http import idempotent_json
from tusserver.edge.jsonapi import MethodRouter, json_response, read_json, validate
from tusserver.edge.urls import public_base
from tusserver.models import is_valid_upload_id
from tusserver.runtime import running
from tusserver.security.principal import principal_of
from tusserver.storage.parts import MAX_PARTS
from tusserver.tus.protocol import MAX_INT

PREFIX = "/api/v1/uploads"
# POSTs that create an upload (the creation rate limit counts them).
CREATION_PATHS = (f"{PREFIX}/presigned", f"{PREFIX}/multipart", f"{PREFIX}/direct")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Lowercase segments of [a-z0-9_-], '/'-separated: no '.', so no '..'; no leading '/'.
_KEY_PREFIX = re.compile(r"[a-z0-9_-]+(?:/[a-z0-9_-]+)*/?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _filename(value: str) -> str:
    if not value.strip() or _CONTROL.search(value):
        raise ValueError("must be a visible name without control characters")
    return value


def _content_type(value: str) -> str:
    value = value.strip().lower()
    if _MIME.fullmatch(value) is None:
        raise ValueError("must be a media type such as video/mp4 (no parameters)")
    return value


def _key_prefix(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if _KEY_PREFIX.fullmatch(value) is None:
        raise ValueError("only a-z, 0-9, '_', '-' and '/' between segments; no leading '/'")
    return value


class _NewFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(min_length=3, max_length=255)
    key_prefix: str | None = Field(None, max_length=64)

    _check_filename = field_validator("filename")(_filename)
    _check_type = field_validator("content_type")(_content_type)
    _check_prefix = field_validator("key_prefix")(_key_prefix)


class PresignedRequest(_NewFile):
    file_size: int | None = Field(None, ge=0, le=MAX_INT)


class MultipartRequest(_NewFile):
    file_size: int = Field(ge=1, le=MAX_INT)
    part_size: int | None = Field(None, ge=1, le=MAX_INT)


class PartEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    part_number: int = Field(ge=1, le=MAX_PART_NUMBER)
    etag: str


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: list[PartEntry] = Field(min_length=1, max_length=MAX_PARTS)


class SmallUploadParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(min_length=3, max_length=255)
    key_prefix: str | None = Field(None, max_length=64)

    _check_filename = field_validator("filename")(_filename)
    _check_type = field_validator("content_type")(_content_type)
    _check_prefix = field_validator("key_prefix")(_key_prefix)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def upload_json(direct: DirectUploads, upload: DirectUpload) -> dict[str, Any]:
    return {
        "upload_id": upload.id,
        "kind": upload.kind,
        "status": upload.status.value,
        "filename": upload.filename,
        "content_type": upload.content_type,
        "file_size": upload.size,
        "part_size": upload.part_size,
        "num_parts": upload.num_parts if upload.kind == "multipart" else None,
        "key_prefix": upload.key_prefix,
        "storage_key": direct.backend.storage_key(upload.id),
        "storage_backend": direct.backend.name,
        "created_at": _iso(upload.created_at),
        "expires_at": _iso(upload.expires_at),
        "finished_at": _iso(upload.finished_at),
    }


def _target_json(target: Target) -> dict[str, Any]:
    return {"url": target.url, "method": target.method, "headers": dict(target.headers)}


def _translate(exc: Exception) -> errors.TusError | None:
    if isinstance(exc, unavailable_errors()):
        return errors.CatalogUnavailable()
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - the redis extra is not installed
        return None
    if isinstance(exc, RedisError):
        return errors.StorageUnavailable()
    return None


def _service(request: Request) -> DirectUploads:
    runtime = running(request.scope)
    found = runtime.direct if runtime is not None else None
    if found is None:
        raise errors.StorageUnavailable("direct uploads are not available right now")
    return found


def _upload_id(request: Request) -> str:
    value: str = request.path_params["upload_id"]
    if not is_valid_upload_id(value):
        raise errors.NotFound()
    return value


def _owner(request: Request) -> str | None:
    return principal_of(request).owner_filter


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.isascii() and raw.isdigit() else None


async def _body(reader: BodyReader) -> AsyncIterator[bytes]:
    """The request body; raises unless it arrived whole, so a cut-off body never counts."""
    async for chunk in reader.chunks():
        yield chunk
    if reader.end is BodyEnd.TOO_LARGE:
        raise errors.PayloadTooLarge()
    if reader.end is BodyEnd.TIMED_OUT:
        raise errors.ReadTimeout()
    if reader.end is not BodyEnd.COMPLETE:
        raise errors.BadRequest("the request body ended early")


async def _finished_json(direct: DirectUploads, upload: DirectUpload) -> dict[str, Any]:
    """The catalog's record of a completed upload (its status when the catalog is off)."""
    record = await direct.file_record(upload)
    return file_json(record) if record is not None else upload_json(direct, upload)


def _new_upload(
    params: PresignedRequest | MultipartRequest, *, part_size: int | None = None
) -> NewUpload:
    return NewUpload(
        filename=params.filename,
        content_type=params.content_type,
        size=params.file_size,
        key_prefix=params.key_prefix,
        part_size=part_size,
    )


def _expires_in(direct: DirectUploads, upload: DirectUpload) -> int:
    """Seconds the upload's signed URLs stay valid (0 once past)."""
    return max(0, int(direct.url_expiry(upload) - direct.now()))


# -- presigned (one PUT) -------------------------------------------------------------------


async def create_presigned(request: Request, body: Any) -> Response:
    direct = _service(request)
    params = validate(PresignedRequest, body)
    new = _new_upload(params)
    upload, target = await direct.create_single(
        principal_of(request), new, base_url=public_base(request, direct.settings)
    )
    return json_response(
        {
            **upload_json(direct, upload),
            "upload_url": target.url,
            "method": target.method,
            "headers": dict(target.headers),
            "expires_in": _expires_in(direct, upload),
        },
        status=201,
    )


def _status(kind: Kind) -> Any:
    async def status(request: Request) -> Response:
        direct = _service(request)
        upload = await direct.load(_upload_id(request), owner=_owner(request), kind=kind)
        upload, received = await direct.progress(upload)
        return json_response({**upload_json(direct, upload), "parts_received": received})

    return status


async def complete_presigned(request: Request) -> Response:
    direct = _service(request)
    upload = await direct.complete(_upload_id(request), owner=_owner(request), kind="single")
    return json_response(await _finished_json(direct, upload))


def _abort(kind: Kind) -> Any:
    async def abort(request: Request) -> Response:
        direct = _service(request)
        upload = await direct.abort(_upload_id(request), owner=_owner(request), kind=kind)
        return json_response(upload_json(direct, upload))

    return abort


# -- multipart -------------------------------------------------------------------------------


async def create_multipart(request: Request, body: Any) -> Response:
    direct = _service(request)
    params = validate(MultipartRequest, body)
    new = _new_upload(params, part_size=params.part_size)
    upload, targets = await direct.create_multipart(
        principal_of(request), new, base_url=public_base(request, direct.settings)
    )
    return json_response(
        {
            **upload_json(direct, upload),
            "parts": [
                {"part_number": n, **_target_json(t)} for n, t in enumerate(targets, start=1)
            ],
            "expires_in": _expires_in(direct, upload),
        },
        status=201,
    )


async def part_url(request: Request) -> Response:
    direct = _service(request)
    upload = await direct.load(_upload_id(request), owner=_owner(request), kind="multipart")
    raw: str = request.path_params["part_number"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 5:  # isdigit alone takes "²"
        raise errors.ValidationFailed(f"part_number must be within [1, {upload.num_parts}]")
    if not upload.active:
        raise errors.InvalidUploadState(f"the upload is {upload.status.value}")
    number = int(raw)
    target = await direct.target(upload, number, base_url=public_base(request, direct.settings))
    return json_response(
        {
            "part_number": number,
            **_target_json(target),
            "expires_in": _expires_in(direct, upload),
        }
    )


async def complete_multipart(request: Request) -> Response:
    direct = _service(request)
    upload_id = _upload_id(request)
    params = validate(CompleteRequest, await read_json(request, max_bytes=2 * 1024 * 1024))
    parts = [CompletedPart(p.part_number, p.etag) for p in params.parts]
    upload = await direct.complete(upload_id, owner=_owner(request), kind="multipart", parts=parts)
    return json_response(await _finished_json(direct, upload))


# -- small direct upload (admins) and local parts ---------------------------------------------


async def direct_small(request: Request) -> Response:
    direct = _service(request)
    principal = principal_of(request)
    if not principal.admin:
        raise errors.Forbidden()
    params = validate(
        SmallUploadParams,
        {
            **request.query_params,
            "content_type": request.headers.get("content-type", "application/octet-stream"),
        },
    )
    declared = _declared_length(request)
    if declared is not None and declared > MAX_SMALL:
        raise errors.PayloadTooLarge(f"the body may hold at most {MAX_SMALL} bytes")
    reader = BodyReader(request.receive, limit=MAX_SMALL, read_timeout=direct.settings.read_timeout)
    data = bytearray()
    async for chunk in _body(reader):
        data += chunk
    new = NewUpload(
        filename=params.filename,
        content_type=params.content_type,
        size=len(data),
        key_prefix=params.key_prefix,
    )
    upload = await direct.store_small(principal, new, bytes(data))
    return json_response(await _finished_json(direct, upload), status=201)


async def put_part(request: Request) -> Response:
    direct = _service(request)
    reader = BodyReader(request.receive, limit=None, read_timeout=direct.settings.read_timeout)
    etag = await direct.accept_part(
        request.path_params["token"],
        content_type=request.headers.get("content-type"),
        declared_length=_declared_length(request),
        body=_body(reader),
    )
    return Response(status_code=200, headers={"ETag": f'"{etag}"', "Cache-Control": "no-store"})


def direct_routes() -> list[BaseRoute]:
    def router(**handlers: Any) -> MethodRouter:
        return MethodRouter({m.upper(): h for m, h in handlers.items()}, translate=_translate)

    one = f"{PREFIX}/presigned/{{upload_id}}"
    many = f"{PREFIX}/multipart/{{upload_id}}"
    return [
        Route(f"{PREFIX}/presigned", router(post=idempotent_json(create_presigned))),
        Route(one, router(get=_status("single"))),
        Route(f"{one}/complete", router(post=complete_presigned)),
        Route(f"{one}/abort", router(post=_abort("single"))),
        Route(f"{PREFIX}/multipart", router(post=idempotent_json(create_multipart))),
        Route(many, router(get=_status("multipart"))),
        Route(f"{many}/parts/{{part_number}}", router(get=part_url)),
        Route(f"{many}/complete", router(post=complete_multipart)),
        Route(f"{many}/abort", router(post=_abort("multipart"))),
        Route(f"{PREFIX}/direct", router(post=direct_small)),
        Route(PART_PATH + "{token}", router(put=put_part)),
    ]
