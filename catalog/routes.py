"""The catalog's HTTP surface under ``/api/v1/files``, always scoped to the caller.

``GET /api/v1/files`` (paged list with search and sort), ``/recent``, ``/by-key/{key}``,
``GET|PATCH|DELETE /{id}`` and ``GET /{id}/thumbnail``. Validation failures are 422 with the
offending parameter named; a database outage is a 503 with a neutral message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from catalog.db import unavailable_errors
from catalog.models import FILENAME_LENGTH
from catalog.repository import ListQuery, Page, SortKey
from catalog.service import Catalog, storable_metadata
from tusserver import errors
from tusserver.edge.jsonapi import ApiError, MethodRouter, json_response, read_json, validate
from tusserver.models import is_valid_upload_id
from tusserver.security.principal import principal_of
from tusserver.security.safejson import unstorable

PREFIX = "/api/v1/files"
MAX_PAGE_SIZE = 50
MAX_RECENT = 20
MAX_SEARCH = 200
MAX_METADATA_KEYS = 100


class ListParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(10, ge=1, le=MAX_PAGE_SIZE)
    search: str = Field("", max_length=MAX_SEARCH)
    sort_by: SortKey = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"


class RecentParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: int = Field(5, ge=1, le=MAX_RECENT)


class FilePatch(BaseModel):
    """Editable fields; ``metadata`` replaces the whole mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str | None = Field(None, min_length=1, max_length=FILENAME_LENGTH)
    metadata: dict[str, str | None] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if not key or len(key) > 128:
                raise ValueError("keys must be 1 to 128 characters")
            if item is not None and len(item) > 4096:
                raise ValueError(f"value of {key!r} is longer than 4096 characters")
        return value


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def file_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "owner": record.owner,
        "filename": record.filename,
        "original_filename": record.original_filename,
        "content_type": record.content_type,
        "declared_content_type": record.declared_content_type,
        "detected_content_type": record.detected_content_type,
        "content_type_mismatch": bool(
            record.declared_content_type
            and record.detected_content_type
            and record.declared_content_type != record.detected_content_type
        ),
        "size": record.size,
        "sha256": record.sha256,
        "storage_backend": record.storage_backend,
        "storage_key": record.storage_key,
        # Rows stored before text was checked may hold a lone surrogate (SQLite kept it), which
        # no JSON answer can encode: normalised here, so one such row cannot break a list.
        "metadata": storable_metadata(record.meta),
        "media": {
            "duration_seconds": record.duration_seconds,
            "width": record.width,
            "height": record.height,
            "video_codec": record.video_codec,
            "audio_codec": record.audio_codec,
            "fps": record.fps,
        },
        "thumbnail_url": f"{PREFIX}/{record.id}/thumbnail" if record.thumbnail_key else None,
        "processed": record.processed_at is not None,
        "created_at": _iso(record.created_at),
        "finished_at": _iso(record.finished_at),
        "updated_at": _iso(record.updated_at),
    }


def _translate(exc: Exception) -> errors.TusError | None:
    if isinstance(exc, (*unavailable_errors(), OSError)):
        return errors.CatalogUnavailable()
    return None


def catalog_routes(get_catalog: Callable[[Request], Catalog | None]) -> list[BaseRoute]:
    """The routes; ``get_catalog`` finds the open catalog for a request (None: not ready)."""
    files = _FileRoutes(get_catalog)

    def router(**handlers: Callable[[Request], Any]) -> MethodRouter:
        return MethodRouter({m.upper(): h for m, h in handlers.items()}, translate=_translate)

    # Fixed paths before the id pattern; ids are validated, so "recent" can never be an id.
    return [
        Route(PREFIX, router(get=files.list_files)),
        Route(f"{PREFIX}/recent", router(get=files.recent)),
        Route(PREFIX + "/by-key/{key:path}", router(get=files.by_key)),
        Route(
            PREFIX + "/{file_id}",
            router(get=files.get_file, patch=files.patch_file, delete=files.delete_file),
        ),
        Route(PREFIX + "/{file_id}/thumbnail", router(get=files.thumbnail)),
    ]


def _file_id(request: Request) -> str:
    """The ``{file_id}`` path parameter; a malformed id is simply a file that does not exist."""
    value: str = request.path_params["file_id"]
    if not is_valid_upload_id(value):
        raise errors.FileNotFound()
    return value


def _page_json(params: ListParams, page: Page) -> dict[str, Any]:
    total_pages = math.ceil(page.total_count / params.page_size)
    return {
        "items": [file_json(r) for r in page.items],
        "total_count": page.total_count,
        "page": params.page,
        "page_size": params.page_size,
        "total_pages": total_pages,
        "has_more": params.page < total_pages,
    }


class _FileRoutes:
    """The handlers; each scopes what it reads or changes to the caller's own files."""

    def __init__(self, get_catalog: Callable[[Request], Catalog | None]) -> None:
        self._get_catalog = get_catalog

    def _catalog(self, request: Request) -> Catalog:
        found = self._get_catalog(request)
        if found is None:
            raise errors.CatalogUnavailable("the catalog is not enabled or not ready")
        return found

    async def list_files(self, request: Request) -> Response:
        params = validate(ListParams, dict(request.query_params))
        if unstorable(params.search):
            # No record holds such text (see storable_metadata); Postgres would refuse it.
            raise ApiError(errors.InvalidText("search must not hold a NUL character"))
        owner = principal_of(request).owner_filter
        query = ListQuery(
            page=params.page,
            page_size=params.page_size,
            search=params.search.strip() or None,
            sort_by=params.sort_by,
            sort_order=params.sort_order,
        )
        page = await self._catalog(request).list_files(query, owner=owner)
        return json_response(_page_json(params, page))

    async def recent(self, request: Request) -> Response:
        params = validate(RecentParams, dict(request.query_params))
        catalog = self._catalog(request)
        records = await catalog.recent(params.limit, owner=principal_of(request).owner_filter)
        return json_response({"items": [file_json(r) for r in records]})

    async def by_key(self, request: Request) -> Response:
        key: str = request.path_params["key"]
        if unstorable(key):
            raise errors.FileNotFound()  # no storage key holds a NUL
        record = await self._catalog(request).get_by_key(
            key, owner=principal_of(request).owner_filter
        )
        if record is None:
            raise errors.FileNotFound()
        return json_response(file_json(record))

    async def get_file(self, request: Request) -> Response:
        catalog = self._catalog(request)
        record = await catalog.get(_file_id(request), owner=principal_of(request).owner_filter)
        if record is None:
            raise errors.FileNotFound()
        return json_response(file_json(record))

    async def patch_file(self, request: Request) -> Response:
        target = _file_id(request)
        patch = validate(FilePatch, await read_json(request))
        if patch.filename is None and patch.metadata is None:
            raise ApiError(errors.ValidationFailed("nothing to change: give filename or metadata"))
        record = await self._catalog(request).edit(
            target,
            owner=principal_of(request).owner_filter,
            filename=patch.filename,
            metadata=patch.metadata,
        )
        if record is None:
            raise errors.FileNotFound()
        return json_response(file_json(record))

    async def delete_file(self, request: Request) -> Response:
        catalog = self._catalog(request)
        deleted = await catalog.delete(_file_id(request), owner=principal_of(request).owner_filter)
        if not deleted:
            raise errors.FileNotFound()
        return Response(status_code=204, headers={"Cache-Control": "no-store"})

    async def thumbnail(self, request: Request) -> Response:
        found = self._catalog(request)
        record = await found.get(_file_id(request), owner=principal_of(request).owner_filter)
        data = None if record is None else await found.thumbnail(record)
        if data is None:
            raise errors.FileNotFound("no thumbnail for this file")
        return Response(
            data,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
        )
