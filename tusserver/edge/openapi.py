"""The OpenAPI 3.1 description of the JSON routes, served at ``GET /api/v1/openapi.json``.

Request bodies are the pydantic models the routes validate with (``model_json_schema``), so
the description cannot drift from what the routes accept; responses are described by the
small models below, which mirror the JSON the routes build. The tus protocol itself
(``/files/``) is not here: tus is specified by its own protocol, not by OpenAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from catalog.repository import SORT_KEYS
from catalog.routes import MAX_PAGE_SIZE, MAX_RECENT, MAX_SEARCH, FilePatch
from catalog.routes import PREFIX as FILES
from delivery.routes import PREFIX as DELIVERY
from delivery.routes import BatchRequest, RedeemRequest, TokenRequest, UrlRequest
from delivery.service import DOWNLOAD_PATH
from tusserver import __version__
from tusserver.api.direct_local import PART_PATH
from tusserver.api.direct_routes import CompleteRequest as MultipartComplete
from tusserver.api.direct_routes import MultipartRequest, PresignedRequest
from tusserver.api.uploads import PREFIX as UPLOADS
from tusserver.api.uploads import CompleteRequest as UploadComplete
from tusserver.api.uploads import InitRequest

PATH = "/api/v1/openapi.json"
_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_REF = "#/components/schemas/{model}"


# -- response bodies (documentation only: the routes build these dicts themselves) -----------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Out):
    code: str
    message: str
    details: Any = None


class Error(_Out):
    error: ErrorDetail


class Media(_Out):
    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    fps: float | None


class FileRecord(_Out):
    id: str
    owner: str
    filename: str
    original_filename: str | None
    content_type: str
    declared_content_type: str | None
    detected_content_type: str | None
    content_type_mismatch: bool
    size: int
    sha256: str | None
    storage_backend: str
    storage_key: str
    metadata: dict[str, Any]
    media: Media
    thumbnail_url: str | None
    processed: bool
    created_at: str | None
    finished_at: str | None
    updated_at: str | None


class FilePage(_Out):
    items: list[FileRecord]
    total_count: int
    page: int
    page_size: int
    total_pages: int
    has_more: bool


class RecentFiles(_Out):
    items: list[FileRecord]


class UploadCreated(_Out):
    upload_id: str
    upload_url: str
    expires_at: str | None
    chunk_size: int


class UploadStatus(_Out):
    upload_id: str
    offset: int
    size: int | None
    completed: bool
    expires_at: str | None
    percentage: float | None


class DirectUpload(_Out):
    upload_id: str
    kind: Literal["single", "multipart"]
    status: str
    filename: str
    content_type: str
    file_size: int | None
    part_size: int | None
    num_parts: int | None
    key_prefix: str | None
    storage_key: str
    storage_backend: str
    created_at: str | None
    expires_at: str | None
    finished_at: str | None


class DirectProgress(DirectUpload):
    parts_received: list[int]


class PresignedCreated(DirectUpload):
    upload_url: str
    method: str
    headers: dict[str, str]
    expires_in: int


class PartTarget(_Out):
    part_number: int
    url: str
    method: str
    headers: dict[str, str]


class PartUrl(PartTarget):
    expires_in: int


class MultipartCreated(DirectUpload):
    parts: list[PartTarget]
    expires_in: int


class SignedUrl(_Out):
    url: str
    expires_at: str


class BatchItem(_Out):
    index: int
    file_id: str | None = None
    storage_key: str | None = None
    url: str | None = None
    expires_at: str | None = None
    error: ErrorDetail | None = None


class BatchResults(_Out):
    results: list[BatchItem]


class OneTimeToken(_Out):
    token: str
    expires_at: str


# -- the document ------------------------------------------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {
    "Error": Error,
    "FileRecord": FileRecord,
    "FilePage": FilePage,
    "RecentFiles": RecentFiles,
    "FilePatch": FilePatch,
    "InitRequest": InitRequest,
    "UploadCreated": UploadCreated,
    "UploadStatus": UploadStatus,
    "UploadComplete": UploadComplete,
    "PresignedRequest": PresignedRequest,
    "PresignedCreated": PresignedCreated,
    "MultipartRequest": MultipartRequest,
    "MultipartCreated": MultipartCreated,
    "MultipartComplete": MultipartComplete,
    "DirectUpload": DirectUpload,
    "DirectProgress": DirectProgress,
    "PartUrl": PartUrl,
    "UrlRequest": UrlRequest,
    "SignedUrl": SignedUrl,
    "BatchRequest": BatchRequest,
    "BatchResults": BatchResults,
    "TokenRequest": TokenRequest,
    "OneTimeToken": OneTimeToken,
    "RedeemRequest": RedeemRequest,
}

# What each status means, and which errors an operation can answer besides its own success.
_STATUS = {
    200: "OK",
    201: "Created",
    204: "Done",
    400: "Bad request",
    401: "A bearer token is missing or invalid",
    403: "Forbidden",
    404: "Not found (or someone else's)",
    409: "Conflict with the upload's state",
    413: "Too large",
    415: "Wrong Content-Type",
    416: "Range not satisfiable",
    422: "Invalid parameters or body (ERR_VALIDATION names the field)",
    429: "Rate limit or quota reached",
    503: "A backend is unavailable; retry",
    507: "Storage is full (ERR_INSUFFICIENT_STORAGE); retry later",
}
_COMMON = (401, 404, 429, 503, 507)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schema["title"] = name
        schemas[name] = schema
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(name)}}}


def _op(
    summary: str,
    ok: tuple[int, str | None],
    errors: tuple[int, ...] = (),
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
    raw_ok: dict[str, Any] | None = None,
    request_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status, schema = ok
    success: dict[str, Any] = {"description": _STATUS[status]}
    if raw_ok is not None:
        success.update(raw_ok)
    elif schema is not None:
        success.update(_json(schema))
    responses: dict[str, Any] = {str(status): success}
    codes = set(errors) | set(_COMMON)
    if body is not None or request_body is not None:
        codes |= {413, 415, 422}
    if body is not None:
        # The JSON reader's own refusals: ERR_JSON_TOO_DEEP, ERR_INVALID_TEXT.
        codes.add(400)
    if public:
        codes.discard(401)
    for code in sorted(codes):
        responses[str(code)] = {"description": _STATUS[code], **_json("Error")}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    elif request_body is not None:
        operation["requestBody"] = request_body
    if public:
        operation["security"] = []
    return operation


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or _ID}


def _query(name: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def build_document() -> dict[str, Any]:
    """The whole document; built once per process and cached by :func:`openapi_endpoint`."""
    paths: dict[str, Any] = {
        **_catalog_paths(),
        **_upload_paths(),
        **_direct_paths(),
        **_delivery_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tusserver REST API",
            "version": __version__,
            "description": (
                "The JSON routes beside the tus protocol endpoint (`/files/`): catalog, REST "
                "uploads, direct-to-storage uploads and signed downloads. Errors are "
                '`{"error": {"code": "ERR_...", "message": "...", "details": ...}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearer": []}],
    }


# The Idempotency-Key header the creating routes accept (a retry gets the first answer).
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _catalog_paths() -> dict[str, Any]:
    """The catalog: listing, reading, renaming and deleting the caller's files."""
    file_id = [_path("file_id")]
    return {
        FILES: {
            "get": _op(
                "List the caller's files",
                (200, "FilePage"),
                (400, 422),
                params=[
                    _query("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}),
                    _query(
                        "page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}
                    ),
                    _query("search", {"type": "string", "maxLength": MAX_SEARCH}),
                    _query("sort_by", {"type": "string", "enum": list(SORT_KEYS)}),
                    _query("sort_order", {"type": "string", "enum": ["asc", "desc"]}),
                ],
            )
        },
        f"{FILES}/recent": {
            "get": _op(
                "The caller's most recent files",
                (200, "RecentFiles"),
                (422,),
                params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_RECENT})],
            )
        },
        FILES + "/by-key/{key}": {
            "get": _op(
                "A file by its storage key",
                (200, "FileRecord"),
                params=[_path("key", {"type": "string", "minLength": 1})],
            )
        },
        FILES + "/{file_id}": {
            "get": _op("A file", (200, "FileRecord"), params=file_id),
            "patch": _op(
                "Rename a file or replace its metadata",
                (200, "FileRecord"),
                body="FilePatch",
                params=file_id,
            ),
            "delete": _op(
                "Delete a file (soft)",
                (204, None),
                params=file_id,
                raw_ok={"description": "Deleted"},
            ),
        },
        FILES + "/{file_id}/thumbnail": {
            "get": _op(
                "A file's JPEG thumbnail",
                (200, None),
                params=file_id,
                raw_ok={
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}
                },
            )
        },
    }


def _upload_paths() -> dict[str, Any]:
    """REST uploads: a tus upload created, watched, recorded or aborted through JSON."""
    upload_id = [_path("upload_id")]
    return {
        f"{UPLOADS}/init": {
            "post": _op(
                "Create a tus upload for the caller",
                (201, "UploadCreated"),
                (400, 409),
                body="InitRequest",
                params=[_IDEMPOTENCY],
            )
        },
        UPLOADS + "/{upload_id}/status": {
            "get": _op("Progress of an upload", (200, "UploadStatus"), (422,), params=upload_id)
        },
        f"{UPLOADS}/complete": {
            "post": _op(
                "The catalog record of a finished upload",
                (200, "FileRecord"),
                (409,),
                body="UploadComplete",
            )
        },
        UPLOADS + "/{upload_id}": {
            "delete": _op("Abort an upload", (204, None), (409,), params=upload_id),
        },
    }


def _direct_paths() -> dict[str, Any]:
    """Direct-to-storage uploads: presigned PUTs, multipart, and the admins' one-shot upload."""
    upload_id = [_path("upload_id")]
    return {**_presigned_paths(upload_id), **_multipart_paths(upload_id), **_proxied_paths()}


def _presigned_paths(upload_id: list[dict[str, Any]]) -> dict[str, Any]:
    """One signed PUT straight to the store, then recorded."""
    return {
        f"{UPLOADS}/presigned": {
            "post": _op(
                "One signed PUT URL",
                (201, "PresignedCreated"),
                (400, 409),
                body="PresignedRequest",
                params=[_IDEMPOTENCY],
            )
        },
        UPLOADS + "/presigned/{upload_id}": {
            "get": _op("A presigned upload", (200, "DirectProgress"), params=upload_id)
        },
        UPLOADS + "/presigned/{upload_id}/complete": {
            "post": _op(
                "Record a presigned upload",
                (200, "FileRecord"),
                (409, 422),
                params=upload_id,
            )
        },
        UPLOADS + "/presigned/{upload_id}/abort": {
            "post": _op("Abort a presigned upload", (200, "DirectUpload"), (409,), params=upload_id)
        },
    }


def _multipart_paths(upload_id: list[dict[str, Any]]) -> dict[str, Any]:
    """Multipart uploads: a URL per part, completed with the parts' ETags."""
    return {
        f"{UPLOADS}/multipart": {
            "post": _op(
                "Part size, count and URLs for a multipart upload",
                (201, "MultipartCreated"),
                (400, 409),
                body="MultipartRequest",
                params=[_IDEMPOTENCY],
            )
        },
        UPLOADS + "/multipart/{upload_id}": {
            "get": _op("A multipart upload", (200, "DirectProgress"), params=upload_id)
        },
        UPLOADS + "/multipart/{upload_id}/parts/{part_number}": {
            "get": _op(
                "A fresh URL for one part",
                (200, "PartUrl"),
                (409, 422),
                params=[*upload_id, _path("part_number", {"type": "integer", "minimum": 1})],
            )
        },
        UPLOADS + "/multipart/{upload_id}/complete": {
            "post": _op(
                "Complete a multipart upload with its parts' ETags",
                (200, "FileRecord"),
                (409,),
                body="MultipartComplete",
                params=upload_id,
            )
        },
        UPLOADS + "/multipart/{upload_id}/abort": {
            "post": _op("Abort a multipart upload", (200, "DirectUpload"), (409,), params=upload_id)
        },
    }


def _proxied_paths() -> dict[str, Any]:
    """Uploads whose bytes pass through this server: the admins' one-shot upload, and the
    part URLs that stand in for the store's own when storage is local."""
    return {
        f"{UPLOADS}/direct": {
            "post": _op(
                "A small file in one request (admins)",
                (201, "FileRecord"),
                (400, 403, 409, 413, 415, 422),
                params=[
                    _query(
                        "filename",
                        {"type": "string", "minLength": 1, "maxLength": 255},
                        required=True,
                    ),
                    _query("key_prefix", {"type": "string", "maxLength": 64}),
                ],
                request_body={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            )
        },
        PART_PATH + "{token}": {
            "put": _op(
                "Store one part through a locally signed URL (the token is the grant)",
                (200, None),
                (400, 403, 409, 413, 415, 422),
                params=[_path("token", {"type": "string", "minLength": 1})],
                public=True,
                raw_ok={
                    "description": "Stored",
                    "headers": {"ETag": {"schema": {"type": "string"}}},
                },
                request_body={
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
            )
        },
    }


def _delivery_paths() -> dict[str, Any]:
    """Signed download URLs, one-time tokens, and the download itself."""
    paths: dict[str, Any] = {
        f"{DELIVERY}/download-url": {
            "post": _op(
                "A short-lived signed download URL",
                (200, "SignedUrl"),
                (400, 403),
                body="UrlRequest",
            )
        },
        f"{DELIVERY}/batch-download-urls": {
            "post": _op(
                "Signed download URLs for several files",
                (200, "BatchResults"),
                body="BatchRequest",
            )
        },
        f"{DELIVERY}/tokens": {
            "post": _op(
                "A one-time download token to share",
                (201, "OneTimeToken"),
                (400, 403),
                body="TokenRequest",
            )
        },
        f"{DELIVERY}/redeem": {
            "post": _op(
                "Redeem a one-time token for a download URL",
                (200, "SignedUrl"),
                body="RedeemRequest",
                public=True,
            )
        },
        DOWNLOAD_PATH + "{token}": {
            "get": _op(
                "Download through a signed URL (the URL is the grant; Range works)",
                (200, None),
                (403, 416),
                params=[_path("token", {"type": "string", "minLength": 1})],
                public=True,
                raw_ok={
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    }
                },
            )
        },
    }
    download = paths[DOWNLOAD_PATH + "{token}"]["get"]["responses"]
    download["206"] = {"description": "The requested range", **download["200"]}
    download["304"] = {"description": "Not modified (If-None-Match)"}
    return paths


_CACHE: dict[str, bytes] = {}


async def openapi_endpoint(request: Request) -> Response:
    """``GET /api/v1/openapi.json``: public, so tools can read it before they have a token."""
    if "document" not in _CACHE:
        _CACHE["document"] = bytes(JSONResponse(build_document()).body)
    return Response(
        _CACHE["document"],
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
