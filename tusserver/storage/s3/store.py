"""``S3Store``: the store contract on S3, one multipart upload per tus upload.

This module only composes: each operation is a few lines here, or a call into the module
that owns it (``pipeline`` writes, ``finish`` completes and concatenates, ``reads`` reads
and presigns, ``recover`` rebuilds and sweeps). Creation, termination and length
declaration, which each take a couple of requests, are here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import TYPE_CHECKING

from tusserver import errors
from tusserver.models import UploadInfo
from tusserver.storage.base import SIDECAR_NAMES, KnownCheck, ProgressCallback
from tusserver.storage.parts import MAX_OBJECT, plan_part_size
from tusserver.storage.s3 import finish, pipeline, reads, recover
from tusserver.storage.s3.client import S3Bucket
from tusserver.storage.s3.config import S3Config
from tusserver.storage.s3.translate import refusals, translated

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class S3Store:
    """DataStore, Terminater, LengthDeferrer, Concater, Reader and Recoverer on S3.

    Not a Truncater: parts are immutable, so a failed checksum is handled by the caller
    (verify on a local spool first). The client is created and closed by the caller.
    """

    def __init__(
        self, client: S3Client, config: S3Config, *, presigner: S3Client | None = None
    ) -> None:
        # presigner: the client that signs URLs for clients (default: ``client``).
        self._bucket = S3Bucket(client, config, presigner)
        self._ended = pipeline.EndedWrites()

    @property
    def bucket(self) -> S3Bucket:
        """The client bound to the bucket's layout (direct uploads presign and complete
        uploads with it)."""
        return self._bucket

    @property
    def client(self) -> S3Client:
        return self._bucket.client

    @property
    def config(self) -> S3Config:
        return self._bucket.config

    async def ping(self) -> None:
        """The bucket answers and our credentials may use it (readiness)."""
        await self._bucket.client.head_bucket(Bucket=self._bucket.name)

    # -- DataStore -----------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> UploadInfo:
        bucket = self._bucket
        part_size = plan_part_size(
            info.length,
            preferred=bucket.config.preferred_part_size,
            max_size=bucket.config.max_size,
            fixed=bucket.config.fixed_part_size,
        )
        key = bucket.data_key(info.id)
        with refusals("create multipart upload"), translated("create multipart upload"):
            resp = await bucket.client.create_multipart_upload(
                Bucket=bucket.name, Key=key, **bucket.object_args(info)
            )
        upload_id = resp["UploadId"]
        created = info.replace(
            storage={**info.storage, "key": key, "upload_id": upload_id, "part_size": part_size}
        )
        try:
            await bucket.put_info(created)
        except BaseException:
            # No record of it anywhere: do not leave an orphan multipart upload behind.
            with contextlib.suppress(Exception):
                await bucket.abort(key, upload_id)
            raise
        return created

    async def write(
        self,
        info: UploadInfo,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None = None,
    ) -> int:
        return await pipeline.write(self._bucket, self._ended, info, chunks, on_progress)

    async def finish(self, info: UploadInfo) -> UploadInfo:
        return await finish.finish(self._bucket, self._ended, info)

    # -- Terminater ----------------------------------------------------------------------

    async def terminate(self, info: UploadInfo) -> None:
        bucket = self._bucket
        self._ended.forget(info.id)
        key = bucket.data_key(info.id)
        upload_id = info.storage.get("upload_id")
        if isinstance(upload_id, str):
            await bucket.abort(key, upload_id)
        sidecars = [bucket.sidecar_key(info.id, name) for name in SIDECAR_NAMES]
        for doomed in (bucket.tail_key(info.id), key, *sidecars, bucket.info_key(info.id)):
            await bucket.delete(doomed)

    # -- OrphanSweeper --------------------------------------------------------------------

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        return await recover.sweep_orphans(self._bucket, is_known, older_than)

    # -- Locator -------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return "s3"

    def storage_key(self, info: UploadInfo) -> str:
        return self._bucket.data_key(info.id)

    async def media_source(self, info: UploadInfo, ttl: int) -> str:
        # ffprobe runs beside this server, so it is given the endpoint the server uses.
        return await reads.presign_get(self._bucket, info, ttl, public=False)

    async def stored_size(self, info: UploadInfo) -> int | None:
        return await reads.stored_size(self._bucket, info)

    # -- Presigner -----------------------------------------------------------------------

    async def presign_get(
        self, info: UploadInfo, *, ttl: int, content_type: str, disposition: str
    ) -> str:
        # S3 answers with these headers instead of the object's own: the safe, sanitized
        # ones we chose, not whatever the uploader declared.
        return await reads.presign_get(
            self._bucket,
            info,
            ttl,
            ResponseContentType=content_type,
            ResponseContentDisposition=disposition,
        )

    # -- Sidecars ------------------------------------------------------------------------

    async def put_sidecar(self, info: UploadInfo, name: str, data: bytes) -> str:
        return await reads.put_sidecar(self._bucket, info, name, data)

    async def get_sidecar(self, info: UploadInfo, name: str) -> bytes | None:
        return await reads.get_sidecar(self._bucket, info, name)

    # -- LengthDeferrer ------------------------------------------------------------------

    async def declare_length(self, info: UploadInfo) -> UploadInfo:
        # The part size stays as planned: parts already uploaded used it. The info object is
        # rewritten so a rebuilt record knows the length too.
        limit = min(self._bucket.config.max_size or MAX_OBJECT, MAX_OBJECT)
        if info.length is not None and info.length > limit:
            raise errors.SizeExceeded()
        await self._bucket.put_info(info)
        return info

    # -- Concater ------------------------------------------------------------------------

    async def concat(self, final: UploadInfo, partials: Sequence[UploadInfo]) -> None:
        await finish.concat(self._bucket, self._ended, final, partials)

    # -- Reader --------------------------------------------------------------------------

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield ``[start, end)`` of the finished object; stops early if it is shorter."""
        async for piece in reads.get_range(
            self._bucket, self._bucket.data_key(info.id), start, end
        ):
            yield piece

    # -- Recoverer -----------------------------------------------------------------------

    async def recover(self, upload_id: str) -> UploadInfo | None:
        return await recover.recover(self._bucket, upload_id)
