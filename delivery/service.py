"""Minting short-lived download URLs for catalog files, and serving the local ones.

A caller names a file (by id or storage key); the delivery checks the key, the caller's
ownership (admins: any) and that the bytes exist, clamps the lifetime, and returns a URL the
download app fetches directly: S3's own presigned GET (the server never touches the bytes),
or on local storage ``/d/{token}``, a token signed over the file, expiry and key id, served
here with Range and ETag. One-time tokens defer the minting to whoever holds the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from catalog.models import FileRecord
from catalog.service import Catalog
from delivery.keys import normalize_key
from delivery.quota import Quota
from delivery.tokens import OneTimeGrant, OneTimeStore, new_token
from tusserver import errors
from tusserver.edge.disposition import clean_filename, content_disposition, safe_media_type
from tusserver.edge.download import serve_bytes
from tusserver.models import UploadInfo, is_valid_upload_id
from tusserver.security.principal import Principal
from tusserver.security.url_signing import UrlSigner
from tusserver.settings import Settings
from tusserver.storage.base import StoreComposer

log = logging.getLogger("tusserver.delivery")

DOWNLOAD_PATH = "/d/"


@dataclass(frozen=True)
class MintedUrl:
    url: str
    expires_at: int


class Delivery:
    def __init__(
        self,
        *,
        catalog: Catalog,
        composer: StoreComposer,
        signer: UrlSigner,
        onetime: OneTimeStore,
        quota: Quota,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self._catalog = catalog
        self._composer = composer
        self._signer = signer
        self._onetime = onetime
        self._quota = quota
        self._settings = settings
        self._clock = clock
        prefixes = settings.delivery_allowed_prefixes or (
            (settings.s3_prefix,) if settings.storage == "s3" else ("",)
        )
        self._prefixes = prefixes

    # -- which file ----------------------------------------------------------------------

    async def resolve(
        self, principal: Principal, *, file_id: str | None, storage_key: str | None
    ) -> FileRecord:
        """The caller's live file named by id or key: 400 for a bad key, 404 otherwise."""
        owner = principal.owner_filter
        if storage_key is not None:
            key = normalize_key(
                storage_key,
                prefixes=self._prefixes,
                extensions=self._settings.delivery_allowed_extensions,
            )
            record = await self._catalog.get_by_key(key, owner=owner)
        elif file_id is not None:
            record = (
                await self._catalog.get(file_id, owner=owner)
                if is_valid_upload_id(file_id)
                else None
            )
        else:
            raise errors.ValidationFailed("give file_id or storage_key")
        if record is None:
            raise errors.FileNotFound()
        if storage_key is None and self._settings.delivery_allowed_extensions:
            # The same rule whichever way the file is named.
            normalize_key(
                record.storage_key,
                prefixes=("",),
                extensions=self._settings.delivery_allowed_extensions,
            )
        return record

    def clamp_ttl(self, ttl: int | None) -> int:
        wanted = self._settings.delivery_default_ttl if ttl is None else ttl
        return max(self._settings.delivery_min_ttl, min(self._settings.delivery_max_ttl, wanted))

    # -- minting -------------------------------------------------------------------------

    async def charge(self, client_ip: str, amount: int = 1) -> None:
        await self._quota.charge(client_ip, amount)

    async def mint(
        self,
        record: FileRecord,
        *,
        ttl: int | None,
        attachment_filename: str | None,
        base_url: str,
    ) -> MintedUrl:
        ttl = self.clamp_ttl(ttl)
        info = _info(record)
        locator = self._composer.locator
        if locator is None or await locator.stored_size(info) is None:
            # Recorded but gone (purged, lost): never sign a URL that would 404 later.
            raise errors.FileNotFound()
        expires_at = int(self._clock()) + ttl
        name = clean_filename(attachment_filename or record.filename)
        presigner = self._composer.presigner
        if presigner is not None:
            url = await presigner.presign_get(
                info,
                ttl=ttl,
                content_type=safe_media_type(record.content_type),
                disposition=content_disposition(name, inline=False),
            )
        else:
            token = self._signer.sign({"f": record.id, "n": name}, expires_at=expires_at)
            url = f"{base_url}{DOWNLOAD_PATH}{token}"
        log.info("delivery.url_minted", extra={"upload_id": record.id, "ttl": ttl})
        return MintedUrl(url=url, expires_at=expires_at)

    # -- one-time tokens -----------------------------------------------------------------

    async def mint_onetime(
        self, record: FileRecord, *, ttl: int | None, attachment_filename: str | None
    ) -> tuple[str, int]:
        lifetime = min(ttl or 86400, self._settings.onetime_token_max_ttl)
        expires_at = int(self._clock()) + max(60, lifetime)
        token = new_token()
        await self._onetime.put(
            token,
            OneTimeGrant(
                file_id=record.id,
                owner=record.owner,
                expires_at=expires_at,
                attachment_filename=attachment_filename,
            ),
        )
        log.info("delivery.onetime_minted", extra={"upload_id": record.id})
        return token, expires_at

    async def drop_expired_tokens(self) -> int:
        return await self._onetime.drop_expired()

    async def redeem(self, token: str, *, base_url: str) -> MintedUrl:
        grant = await self._onetime.take(token) if 0 < len(token) <= 256 else None
        if grant is None:
            raise errors.TokenNotFound()
        # Minted for its owner: the holder acts with the owner's access, once.
        record = await self._catalog.get(grant.file_id, owner=grant.owner)
        if record is None:
            raise errors.TokenNotFound()
        log.info("delivery.onetime_redeemed", extra={"upload_id": record.id})
        return await self.mint(
            record,
            ttl=None,
            attachment_filename=grant.attachment_filename,
            base_url=base_url,
        )

    # -- serving local downloads ---------------------------------------------------------

    async def serve(self, request: Request, token: str) -> Response:
        claims = self._signer.verify(token, now=self._clock())
        file_id, name = claims.get("f"), claims.get("n")
        if (
            not isinstance(file_id, str)
            or not is_valid_upload_id(file_id)
            or not isinstance(name, str)
        ):
            raise errors.SignatureInvalid()
        record = await self._catalog.get(file_id, owner=None)
        reader = self._composer.reader
        if record is None or reader is None:
            # Deleted since the URL was minted: a signed URL does not outlive the file.
            raise errors.FileNotFound()
        info = _info(record)
        locator = self._composer.locator
        size = await locator.stored_size(info) if locator is not None else None
        if size is None:
            raise errors.FileNotFound()
        return serve_bytes(
            request,
            reader,
            info,
            size=size,
            media_type=safe_media_type(record.content_type),
            disposition=content_disposition(name, inline=False),
            # The URL is the credential and expires; no shared cache may keep the bytes.
            cache_control="private, no-store",
        )


def _info(record: FileRecord) -> UploadInfo:
    return UploadInfo(id=record.id, length=record.size, offset=record.size)
