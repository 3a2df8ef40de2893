"""The REST upload API under ``/api/v1/uploads``: a JSON face on tus uploads.

Owns four routes, all scoped to the caller (another user's upload is a 404, like a missing
one):

- ``POST /init`` creates a tus upload for the caller (``Idempotency-Key`` honoured) and
  answers where to send the bytes (``upload_url``, an absolute tus URL) and in what chunks;
- ``GET /{id}/status``: offset, size, percentage, expiry;
- ``POST /complete``: the catalog record once every byte is there (409
  ``ERR_UPLOAD_INCOMPLETE`` before), recording it if the catalog has not yet;
- ``DELETE /{id}`` aborts: the tus termination.

Bytes never pass through these routes; they travel over tus. With
``TUS_MAX_DURATION_SECONDS``, ``complete`` waits for the media probe and refuses (and
deletes) a longer file, and both ``complete`` and ``status`` report such a file as 422
``ERR_DURATION_EXCEEDED``.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from catalog.db import unavailable_errors
from catalog.models import FileRecord
from catalog.routes import file_json
from catalog.service import Catalog
from tusserver import errors
from tusserver.core.uploads import UploadService, check_metadata_size
from tusserver.edge.idempotent_http import idempotent_json
from tusserver.edge.jsonapi import (
    NO_STORE,
    ApiError,
    MethodRouter,
    json_response,
    read_json,
    validate,
)
from tusserver.hooks import screen_creation
from tusserver.models import UploadInfo
from tusserver.runtime import running, runtime_of, settings_of
from tusserver.security.admission import check_content_type, role_max_size
from tusserver.security.principal import principal_of
from tusserver.state.base import state_unavailable
from tusserver.tus.handlers.common import upload_url
from tusserver.tus.protocol import MAX_INT, encode_metadata

log = logging.getLogger("tusserver.api")

PREFIX = "/api/v1/uploads"
# POSTs here create uploads (rate-limited as creations).
CREATION_PATHS = (f"{PREFIX}/init",)
MiB = 1024 * 1024
# tus-js-client and Uppy do well with a few MiB per PATCH; S3 uploads get their part size.
DEFAULT_CHUNK_SIZE = 8 * MiB
MAX_METADATA_PAIRS = 32
# RFC 6838 section 4.2 restricted names, lowercased; parameters are not part of the type.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# tus metadata keys: no spaces or commas (protocol._METADATA_KEY).
_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]{1,64}")
_RESERVED_KEYS = frozenset({"filename", "filetype"})


class _UploadIdConvertor(Convertor[str]):
    """Only upload ids match, so ``/api/v1/uploads/<other>`` stays free for other routes."""

    regex = "[0-9a-f]{32}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("upload_id", _UploadIdConvertor())


class InitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str = Field(min_length=1, max_length=255)
    file_size: int = Field(gt=0, le=MAX_INT, strict=True)
    content_type: str = Field(min_length=3, max_length=127)
    duration_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=MAX_METADATA_PAIRS)

    @field_validator("filename")
    @classmethod
    def _printable(cls, value: str) -> str:
        if _CONTROL.search(value) or not value.strip():
            raise ValueError("must be printable and not blank")
        return value

    @field_validator("content_type")
    @classmethod
    def _media_type(cls, value: str) -> str:
        lowered = value.strip().lower()
        if _MEDIA_TYPE.fullmatch(lowered) is None:
            raise ValueError("must be a media type such as video/mp4")
        return lowered

    @field_validator("metadata")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if _METADATA_KEY.fullmatch(key) is None:
                raise ValueError("keys are 1 to 64 printable characters, no spaces or commas")
            if key in _RESERVED_KEYS:
                raise ValueError(f"{key!r} is set from filename/content_type")
            if len(item) > 4096:
                raise ValueError(f"value of {key!r} is longer than 4096 characters")
        return value


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    upload_id: str = Field(pattern=r"^[0-9a-f]{32}$")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def chunk_size(info: UploadInfo) -> int:
    """A PATCH size to recommend: S3's planned part size (whole parts, no tail objects),
    else DEFAULT_CHUNK_SIZE; never more than the file."""
    part = info.storage.get("part_size")
    size = part if isinstance(part, int) and part > 0 else DEFAULT_CHUNK_SIZE
    return min(size, info.length) if info.length else size


def status_json(info: UploadInfo) -> dict[str, Any]:
    length = info.length
    if length is None:
        percentage = None
    elif length == 0:
        percentage = 100.0
    else:
        # Floored, so 100 means done and never "almost done, rounded up".
        percentage = math.floor(info.offset * 10_000 / length) / 100
    return {
        "upload_id": info.id,
        "offset": info.offset,
        "size": length,
        "completed": info.is_complete,
        "expires_at": None if info.is_complete else _iso(info.expires_at),
        "percentage": percentage,
    }


def _translate(exc: Exception) -> errors.TusError | None:
    if isinstance(exc, unavailable_errors()):
        return errors.CatalogUnavailable()
    if isinstance(exc, (OSError, *state_unavailable())):
        return errors.StorageUnavailable()
    return None


def _service(request: Request) -> UploadService:
    return runtime_of(request).service


def _open_catalog(request: Request) -> Catalog | None:
    runtime = running(request.scope)
    return runtime.catalog if runtime is not None else None


def _catalog(request: Request) -> Catalog:
    catalog = _open_catalog(request)
    if catalog is None:
        raise errors.CatalogUnavailable("the catalog is not enabled or not ready")
    return catalog


async def _duration_gate(request: Request, upload_id: str, *, wait: bool) -> FileRecord | None:
    """The catalog's record of an upload, refused (422) when longer than the limit.

    A refused file is soft-deleted (the sweeper removes its bytes after
    ``TUS_DELETED_GRACE``); a deleted record whose probed duration exceeds the limit is how
    the refusal is remembered. ``wait``: probe now if the worker pool has not yet, so the
    answer is final.
    """
    catalog = _open_catalog(request)
    settings = settings_of(request)
    limit = settings.max_duration_seconds if settings is not None else None
    if not limit or catalog is None:
        return None
    record = await catalog.repo.get_any(upload_id)
    if record is None:
        return None
    if wait and record.deleted_at is None and record.processed_at is None:
        await catalog.process(upload_id)
        record = await catalog.repo.get_any(upload_id) or record
    duration = record.duration_seconds
    if duration is None or duration <= limit:
        return record
    if record.deleted_at is None:
        await catalog.repo.soft_delete(upload_id, owner=None, now=catalog.now())
        log.info("upload.duration_exceeded", extra={"upload_id": upload_id, "duration": duration})
    raise errors.DurationExceeded(f"the media lasts {duration:.1f} s; at most {limit:g} s")


async def init(request: Request, body: Any) -> Response:
    params = validate(InitRequest, body)
    service = _service(request)
    settings = service.settings
    principal = principal_of(request)
    check_content_type(settings, params.content_type)
    limit = role_max_size(settings, principal)
    if limit and params.file_size > limit:
        raise errors.SizeExceeded(f"file_size exceeds your maximum size of {limit}")
    longest = settings.max_duration_seconds
    if longest and params.duration_seconds is not None and params.duration_seconds > longest:
        raise errors.DurationExceeded(f"at most {longest:g} s are allowed")
    # filename/filetype are what the catalog records the file by (and HEAD echoes).
    metadata: dict[str, str | None] = {
        **params.metadata,
        "filename": params.filename,
        "filetype": params.content_type,
    }
    # Before the pre-create hook is asked about it (creation checks it again, after).
    check_metadata_size(settings.max_metadata_size, metadata)
    metadata, metadata_raw = await screen_creation(
        request,
        length=params.file_size,
        metadata=metadata,
        metadata_raw=encode_metadata(metadata),
        owner=principal.user_id,
        concat=None,
    )
    info = await service.create(
        length=params.file_size,
        metadata=metadata,
        metadata_raw=metadata_raw,
        owner=principal.user_id,
    )
    url = upload_url(request, settings, info.id)
    return json_response(
        {
            "upload_id": info.id,
            "upload_url": url,
            "expires_at": _iso(info.expires_at),
            "chunk_size": chunk_size(info),
        },
        status=201,
        headers={"Location": url},
    )


async def status(request: Request) -> Response:
    owner = principal_of(request).owner_filter
    info = await _service(request).get(request.path_params["upload_id"], owner=owner)
    await _duration_gate(request, info.id, wait=False)
    return json_response(status_json(info))


async def complete(request: Request) -> Response:
    params = validate(CompleteRequest, await read_json(request))
    service = _service(request)
    owner = principal_of(request).owner_filter
    info = await service.get(params.upload_id, owner=owner)
    if info.is_partial:
        raise ApiError(
            errors.ValidationFailed("a partial upload becomes a file through its final upload")
        )
    if not info.is_complete:
        raise ApiError(errors.UploadIncomplete(), {"offset": info.offset, "size": info.length})
    catalog = _catalog(request)
    if info.finished_at is None:
        # Every byte is stored but finishing was cut short (a crash): finish it now.
        async with service.locked_for(info.id, owner=owner):
            info = await service.load_locked(info.id, owner=owner)
            if info.finished_at is None:
                info = await service.finish(info)
    record = await catalog.get(info.id, owner=owner)
    if record is None:
        await _duration_gate(request, info.id, wait=False)  # deleted as too long: say so
        # Recording at finish failed (the catalog was down): it is idempotent, so do it now.
        await catalog.record(info)
        record = await catalog.get(info.id, owner=owner)
        if record is None:
            raise errors.FileNotFound("the file was deleted")
    # The gate re-reads the record: it may have been probed meanwhile.
    record = await _duration_gate(request, info.id, wait=True) or record
    return json_response(file_json(record))


async def abort(request: Request) -> Response:
    service = _service(request)
    owner = principal_of(request).owner_filter
    upload_id = request.path_params["upload_id"]
    # Taking the lock asks a running PATCH to stop first, as a tus DELETE does; so only
    # once the caller is known to own the upload.
    async with service.locked_for(upload_id, owner=owner):
        info = await service.load_locked(upload_id, owner=owner)
        await service.terminate(info)
    return Response(status_code=204, headers=NO_STORE)


def upload_api_routes() -> list[BaseRoute]:
    def router(**handlers: Any) -> MethodRouter:
        return MethodRouter({m.upper(): h for m, h in handlers.items()}, translate=_translate)

    return [
        Route(f"{PREFIX}/init", router(post=idempotent_json(init))),
        Route(f"{PREFIX}/complete", router(post=complete)),
        Route(PREFIX + "/{upload_id:upload_id}", router(delete=abort)),
        Route(PREFIX + "/{upload_id:upload_id}/status", router(get=status)),
    ]
