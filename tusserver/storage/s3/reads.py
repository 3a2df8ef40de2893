"""Reading stored objects back: ranged reads, sizes, presigned GET URLs and sidecars.

Nothing here writes upload bytes, so nothing here is fenced; sidecars (thumbnails and the
like, derived from a finished upload) are stored and read back next to the data object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from botocore.exceptions import ClientError

from tusserver.models import UploadInfo
from tusserver.storage.s3.client import S3Bucket
from tusserver.storage.s3.translate import error_code, translated

_READ_PIECE = 1024 * 1024


async def get_range(bucket: S3Bucket, key: str, start: int, end: int) -> AsyncIterator[bytes]:
    """Yield ``[start, end)`` of the object at ``key``; stops early if it is shorter."""
    if start >= end:
        return
    try:
        with translated(f"get {key}"):
            resp = await bucket.client.get_object(
                Bucket=bucket.name, Key=key, Range=f"bytes={start}-{end - 1}"
            )
    except ClientError as exc:
        if error_code(exc)[0] == "InvalidRange":
            return  # starts past the end of the object
        raise
    body = resp["Body"]
    try:
        while True:
            with translated(f"get {key}"):
                piece = await body.read(_READ_PIECE)
            if not piece:
                return
            yield piece
    finally:
        body.close()


async def stored_size(bucket: S3Bucket, info: UploadInfo) -> int | None:
    try:
        return await bucket.head_size(bucket.data_key(info.id), "head object")
    except FileNotFoundError:
        return None


async def presign_get(
    bucket: S3Bucket, info: UploadInfo, ttl: int, *, public: bool = True, **response: str
) -> str:
    """A GET URL for the finished object, valid ``ttl`` seconds; ``response`` are the
    ``Response*`` headers S3 should answer with instead of the object's own. ``public``:
    for a client (the public endpoint), else for this server's own tools (the internal one)."""
    signer = bucket.presigner if public else bucket.client
    url: str = await signer.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket.name, "Key": bucket.data_key(info.id), **response},
        ExpiresIn=ttl,
    )
    return url


async def put_sidecar(bucket: S3Bucket, info: UploadInfo, name: str, data: bytes) -> str:
    key = bucket.sidecar_key(info.id, name)
    content = "image/jpeg" if name.endswith(".jpg") else "application/octet-stream"
    with translated("put sidecar"):
        await bucket.client.put_object(
            Bucket=bucket.name, Key=key, Body=data, ContentType=content, **bucket.sse_args()
        )
    return key


async def get_sidecar(bucket: S3Bucket, info: UploadInfo, name: str) -> bytes | None:
    key = bucket.sidecar_key(info.id, name)
    try:
        with translated("get sidecar"):
            resp = await bucket.client.get_object(Bucket=bucket.name, Key=key)
            async with resp["Body"] as body:
                data: bytes = await body.read()
    except FileNotFoundError:
        return None
    return data
