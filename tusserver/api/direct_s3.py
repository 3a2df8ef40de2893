"""Direct uploads on S3: real presigned URLs, so the bytes go from the client to S3.

A single upload is one presigned ``PutObject`` whose Content-Type (and server-side encryption,
if configured) is part of the signature: a PUT with another type fails at S3. A multipart
upload is initiated here (``CreateMultipartUpload`` with the type and encryption), each part
is a presigned ``UploadPart``, and complete hands S3 the client's part list. Either way the
object key is the store's data key for the upload id (``<prefix><id>``), never a key a client
chose.

S3 failures are translated by the store's own translation (``storage.s3.translate``): a
missing upload or object is ``FileNotFoundError``, outages are ``StorageUnavailable`` (503);
of the 4xx it leaves, a refused part list is ``PartsRejected``, anything else a 503. Keys and
encryption arguments come from the store's ``S3Bucket``, so both paths agree on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tusserver import errors
from tusserver.api.direct_backend import CompletedPart, PartsRejected, Stored, Target
from tusserver.api.direct_state import DirectUpload
from tusserver.storage.base import KnownCheck
from tusserver.storage.s3 import S3Store
from tusserver.storage.s3.translate import error_code, translated

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# What S3 answers to a part list that does not match its parts; the client can fix these.
_REJECTED = {
    "InvalidPart": "a part is missing in storage or its etag does not match",
    "InvalidPartOrder": "the parts are not in ascending order",
    "EntityTooSmall": "a part other than the last is smaller than 5 MiB",
}


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """The store's translation; of the 4xx it passes on, a refused part list is the
    client's to fix, anything else an outage for the client."""
    try:
        with translated(what):
            yield
    except ClientError as exc:
        code, _ = error_code(exc)
        if code in _REJECTED:
            raise PartsRejected(_REJECTED[code]) from exc
        raise errors.StorageUnavailable() from exc


class S3DirectBackend:
    def __init__(self, store: S3Store, *, clock: Any) -> None:
        self._s3 = store.bucket
        self._client = store.bucket.client
        self._bucket = store.bucket.name
        self._clock = clock

    @property
    def name(self) -> str:
        return "s3"

    def storage_key(self, upload_id: str) -> str:
        return self._s3.data_key(upload_id)

    async def start(self, upload: DirectUpload) -> DirectUpload:
        if upload.kind != "multipart":
            return upload
        with _translated("create multipart upload"):
            created = await self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=self.storage_key(upload.id),
                ContentType=upload.content_type,
                **self._s3.sse_args(),
            )
        return upload.replace(multipart_id=created["UploadId"])

    async def target(
        self, upload: DirectUpload, part_number: int, *, expires_at: int, base_url: str
    ) -> Target:
        # S3 counts the lifetime from signing with the real clock.
        ttl = max(1, int(expires_at - self._clock()))
        key = self.storage_key(upload.id)
        if upload.kind == "single":
            params: dict[str, Any] = {
                "Bucket": self._bucket,
                "Key": key,
                "ContentType": upload.content_type,
                **self._s3.sse_args(),
            }
            url = await self._s3.presigner.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=ttl
            )
            headers = {"Content-Type": upload.content_type, **self._s3.sse_headers()}
            return Target(url=url, headers=headers)
        url = await self._s3.presigner.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "UploadId": upload.multipart_id,
                "PartNumber": part_number,
            },
            ExpiresIn=ttl,
        )
        return Target(url=url)

    async def received_parts(self, upload: DirectUpload) -> list[int]:
        if upload.kind == "single":
            try:
                await self._head_size(self.storage_key(upload.id))
            except FileNotFoundError:
                return []
            return [0]
        if upload.multipart_id is None:
            return []
        numbers: list[int] = []
        paginator = self._client.get_paginator("list_parts")
        try:
            with _translated("list parts"):
                async for page in paginator.paginate(
                    Bucket=self._bucket,
                    Key=self.storage_key(upload.id),
                    UploadId=upload.multipart_id,
                ):
                    numbers += [p["PartNumber"] for p in page.get("Parts", [])]
        except FileNotFoundError:
            return []
        return sorted(numbers)

    async def _head_size(self, key: str) -> int:
        with _translated("head object"):
            head = await self._client.head_object(Bucket=self._bucket, Key=key)
        return int(head["ContentLength"])

    async def finish(self, upload: DirectUpload, parts: Sequence[CompletedPart]) -> Stored:
        key = self.storage_key(upload.id)
        if upload.kind == "single":
            try:
                return Stored(await self._head_size(key))
            except FileNotFoundError:
                raise errors.UploadIncomplete("nothing was uploaded to the URL yet") from None
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag} for p in parts
        ]
        try:
            with _translated("complete multipart upload"):
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload.multipart_id or "",
                    MultipartUpload={"Parts": completed},
                )
        except FileNotFoundError:
            # No such multipart upload: completed by an earlier attempt whose answer was
            # lost (then the object exists), or aborted (the orphan sweep, an abort).
            try:
                return Stored(await self._head_size(key))
            except FileNotFoundError:
                raise errors.InvalidUploadState("the upload's parts are gone") from None
        return Stored(await self._head_size(key))

    async def store(self, upload: DirectUpload, data: bytes) -> None:
        with _translated("put object"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self.storage_key(upload.id),
                Body=data,
                ContentType=upload.content_type,
                **self._s3.sse_args(),
            )

    async def discard(self, upload: DirectUpload) -> None:
        if upload.multipart_id is None:
            # A single PUT may have landed already; nobody will complete it now.
            await self.delete_object(upload)
            return
        with contextlib.suppress(FileNotFoundError), _translated("abort"):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.storage_key(upload.id), UploadId=upload.multipart_id
            )

    async def delete_object(self, upload: DirectUpload) -> None:
        with _translated("delete"):
            await self._client.delete_object(Bucket=self._bucket, Key=self.storage_key(upload.id))

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        # Multipart uploads nobody completes are the store's orphan sweep's to abort (they
        # live under the data key); a single PUT leaves nothing behind but its object.
        return 0
