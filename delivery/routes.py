"""The delivery's HTTP surface: minting URLs (``/api/v1/delivery/...``) and the local
signed download route (``/d/{token}``, which needs no bearer token: the URL is the grant)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from delivery.service import DOWNLOAD_PATH, Delivery
from tusserver import errors
from tusserver.edge.jsonapi import ApiError, MethodRouter, json_response, read_json, validate
from tusserver.edge.urls import public_base
from tusserver.security.peers import client_ip as peer_ip
from tusserver.security.principal import Principal, principal_of
from tusserver.settings import Settings

PREFIX = "/api/v1/delivery"
MAX_BATCH = 100


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str | None = Field(None, max_length=64)
    storage_key: str | None = Field(None, max_length=1024)
    attachment_filename: str | None = Field(None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_reference(self) -> FileRef:
        if (self.file_id is None) == (self.storage_key is None):
            raise ValueError("give exactly one of file_id and storage_key")
        return self


class UrlRequest(FileRef):
    ttl_seconds: int | None = Field(None, ge=1, le=7 * 86400)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)
    ttl_seconds: int | None = Field(None, ge=1, le=7 * 86400)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str = Field(max_length=64)
    ttl_seconds: int | None = Field(None, ge=60)
    attachment_filename: str | None = Field(None, min_length=1, max_length=1024)


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str = Field(min_length=1, max_length=256)


def client_ip(request: Request, settings: Settings) -> str:
    return peer_ip(request.scope, trust_proxy=settings.trust_proxy)


def _iso(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def delivery_routes(
    settings: Settings, get_delivery: Callable[[Request], Delivery | None]
) -> list[BaseRoute]:
    """The routes; ``get_delivery`` finds the open delivery for a request (None: not ready)."""
    handlers = _DeliveryRoutes(settings, get_delivery)

    def router(**methods: Callable[[Request], Any]) -> MethodRouter:
        return MethodRouter({m.upper(): h for m, h in methods.items()})

    return [
        Route(f"{PREFIX}/download-url", router(post=handlers.download_url)),
        Route(f"{PREFIX}/batch-download-urls", router(post=handlers.batch)),
        Route(f"{PREFIX}/tokens", router(post=handlers.tokens)),
        Route(f"{PREFIX}/redeem", router(post=handlers.redeem)),
        Route(DOWNLOAD_PATH + "{token}", router(get=handlers.download)),
    ]


class _DeliveryRoutes:
    """The handlers. Minting is charged to the client's download quota before any URL exists."""

    def __init__(
        self, settings: Settings, get_delivery: Callable[[Request], Delivery | None]
    ) -> None:
        self._settings = settings
        self._get_delivery = get_delivery

    def _delivery(self, request: Request) -> Delivery:
        found = self._get_delivery(request)
        if found is None:
            raise errors.CatalogUnavailable("the delivery service is not ready")
        return found

    async def download_url(self, request: Request) -> Response:
        body = validate(UrlRequest, await read_json(request))
        service = self._delivery(request)
        settings = self._settings
        record = await service.resolve(
            principal_of(request), file_id=body.file_id, storage_key=body.storage_key
        )
        await service.charge(client_ip(request, settings))
        minted = await service.mint(
            record,
            ttl=body.ttl_seconds,
            attachment_filename=body.attachment_filename,
            base_url=public_base(request, settings),
        )
        return json_response({"url": minted.url, "expires_at": _iso(minted.expires_at)})

    async def batch(self, request: Request) -> Response:
        body = validate(BatchRequest, await read_json(request))
        service = self._delivery(request)
        settings = self._settings
        # The whole batch counts against the quota before any URL is minted.
        await service.charge(client_ip(request, settings), len(body.items))
        principal = principal_of(request)
        base = public_base(request, settings)
        results: list[dict[str, Any]] = []
        for index, raw in enumerate(body.items):
            result: dict[str, Any] = {"index": index}
            try:
                await _mint_item(service, principal, raw, body.ttl_seconds, base, result)
            except ApiError as exc:
                result["error"] = {"code": exc.error.code, "message": exc.error.message}
            except errors.TusError as exc:
                result["error"] = {"code": exc.code, "message": exc.message}
            results.append(result)
        return json_response({"results": results})

    async def tokens(self, request: Request) -> Response:
        body = validate(TokenRequest, await read_json(request))
        service = self._delivery(request)
        record = await service.resolve(
            principal_of(request), file_id=body.file_id, storage_key=None
        )
        token, expires_at = await service.mint_onetime(
            record, ttl=body.ttl_seconds, attachment_filename=body.attachment_filename
        )
        return json_response({"token": token, "expires_at": _iso(expires_at)}, status=201)

    async def redeem(self, request: Request) -> Response:
        body = validate(RedeemRequest, await read_json(request))
        service = self._delivery(request)
        settings = self._settings
        await service.charge(client_ip(request, settings))
        minted = await service.redeem(body.token, base_url=public_base(request, settings))
        return json_response({"url": minted.url, "expires_at": _iso(minted.expires_at)})

    async def download(self, request: Request) -> Response:
        return await self._delivery(request).serve(request, request.path_params["token"])


async def _mint_item(
    service: Delivery,
    principal: Principal,
    raw: dict[str, Any],
    ttl: int | None,
    base_url: str,
    result: dict[str, Any],
) -> None:
    """One batch item's URL, filled into ``result``; a failure raises and fails only this item.

    The reference goes into ``result`` once the item validates, so a later error names the file.
    """
    item = validate(FileRef, raw)
    result.update(
        {"file_id": item.file_id} if item.file_id is not None else {"storage_key": item.storage_key}
    )
    record = await service.resolve(principal, file_id=item.file_id, storage_key=item.storage_key)
    minted = await service.mint(
        record, ttl=ttl, attachment_filename=item.attachment_filename, base_url=base_url
    )
    result.update(url=minted.url, expires_at=_iso(minted.expires_at))


# Paths that need no bearer token: the signed download itself, and redeeming a one-time
# token (whoever holds the token is the one it was shared with).
PUBLIC_PREFIXES = (DOWNLOAD_PATH, f"{PREFIX}/redeem")
