"""The S3 client bound to one bucket's layout: ``S3Bucket``.

This module owns:

* the keys of an upload: data ``{prefix}{id}``, info ``{prefix}{id}.info`` (the upload record
  as JSON), tail ``{prefix}{id}.part`` (bytes that do not fill a part yet), sidecars
  ``{prefix}{id}.{name}``;
* the server-side encryption arguments (and, for presigned URLs, headers) every write carries;
* the small requests the store repeats (info, tail, parts, delete, abort, complete), each
  translated (``translate``) and, when it writes, fenced: a writer whose Redis lease lapsed
  or was lost stops before the request (``check_held``);
* which of the parts S3 lists can hold valid bytes (``run``, ``cumulative``).

Direct uploads use the same wrapper, so both paths agree on keys, encryption and errors.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from tusserver import errors
from tusserver.models import UploadInfo, checked_upload_id
from tusserver.state.fence import check_held
from tusserver.storage.base import check_sidecar_name
from tusserver.storage.s3.config import S3Config
from tusserver.storage.s3.metadata import content_type, user_metadata
from tusserver.storage.s3.translate import translated

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# The tail object records where it starts, so a stale tail is recognised as such.
_TAIL_START = "tus-tail-start"


class Part(NamedTuple):
    number: int
    size: int
    etag: str


class Tail(NamedTuple):
    start: int  # -1 when the object carries no (valid) start: never matches
    data: bytes


class TailSize(NamedTuple):
    """Where the tail object starts and how long it is, read without its bytes."""

    start: int  # -1 when the object carries no (valid) start: never matches
    size: int


def run(parts: Sequence[Part]) -> list[Part]:
    """The parts numbered 1, 2, 3... without a gap: only these can hold valid bytes."""
    found: list[Part] = []
    for part in sorted(parts, key=lambda p: p.number):
        if part.number != len(found) + 1:
            break
        found.append(part)
    return found


def cumulative(parts: Sequence[Part]) -> list[int]:
    """``ends[j]`` is where the first ``j`` parts end (``ends[0] == 0``)."""
    ends = [0]
    for part in parts:
        ends.append(ends[-1] + part.size)
    return ends


def multipart_of(info: UploadInfo) -> tuple[str, int]:
    """The S3 multipart upload id and the part size planned at creation."""
    upload_id = info.storage.get("upload_id")
    part_size = info.storage.get("part_size")
    if not isinstance(upload_id, str) or not isinstance(part_size, int):
        raise ValueError(f"upload {info.id} was not created by the S3 store")
    return upload_id, part_size


def _tail_start(resp: Any) -> int:
    raw = resp.get("Metadata", {}).get(_TAIL_START, "")
    return int(raw) if raw.isdigit() else -1


class S3Bucket:
    """The client, the bucket and the store's settings: keys, encryption, small requests."""

    def __init__(self, client: S3Client, config: S3Config) -> None:
        self.client = client
        self.config = config
        self.name = config.bucket

    # -- keys ----------------------------------------------------------------------------

    def data_key(self, upload_id: str) -> str:
        return f"{self.config.prefix}{checked_upload_id(upload_id)}"

    def info_key(self, upload_id: str) -> str:
        return self.data_key(upload_id) + ".info"

    def tail_key(self, upload_id: str) -> str:
        return self.data_key(upload_id) + ".part"

    def sidecar_key(self, upload_id: str, name: str) -> str:
        return f"{self.data_key(upload_id)}.{check_sidecar_name(name)}"

    def tail_source(self, upload_id: str) -> dict[str, str]:
        """The tail as the source of a server-side copy."""
        return {"Bucket": self.name, "Key": self.tail_key(upload_id)}

    # -- arguments every write carries ---------------------------------------------------

    def sse_args(self) -> dict[str, Any]:
        """Server-side encryption, as request arguments."""
        args: dict[str, Any] = {}
        if self.config.sse is not None:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.kms_key_id:
            args["SSEKMSKeyId"] = self.config.kms_key_id
        return args

    def sse_headers(self) -> dict[str, str]:
        """Server-side encryption, as the headers a presigned PUT must be sent with."""
        headers: dict[str, str] = {}
        if self.config.sse is not None:
            headers["x-amz-server-side-encryption"] = self.config.sse
        if self.config.kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.config.kms_key_id
        return headers

    def object_args(self, info: UploadInfo) -> dict[str, Any]:
        """Content-Type, user metadata and encryption of the upload's finished object."""
        metadata = dict(info.metadata)
        return {
            "ContentType": content_type(metadata),
            "Metadata": user_metadata(metadata),
            **self.sse_args(),
        }

    # -- requests ------------------------------------------------------------------------

    async def put_info(self, info: UploadInfo) -> None:
        body = json.dumps(info.to_dict(), separators=(",", ":")).encode()
        check_held()
        with translated("info object"):
            await self.client.put_object(
                Bucket=self.name,
                Key=self.info_key(info.id),
                Body=body,
                ContentType="application/json",
                **self.sse_args(),
            )

    async def delete(self, key: str) -> None:
        check_held()
        # Deleting a missing key succeeds in S3: termination and cleanup may repeat.
        with translated("delete"):
            await self.client.delete_object(Bucket=self.name, Key=key)

    async def abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError), translated("abort"):
            await self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)

    async def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = 0
        while True:
            with translated("list parts"):
                resp = await self.client.list_parts(
                    Bucket=self.name,
                    Key=key,
                    UploadId=upload_id,
                    MaxParts=self.config.list_parts_page,
                    PartNumberMarker=marker,
                )
            parts.extend(Part(p["PartNumber"], p["Size"], p["ETag"]) for p in resp.get("Parts", []))
            if not resp.get("IsTruncated"):
                return parts
            next_marker = resp.get("NextPartNumberMarker", 0)
            if next_marker <= marker:
                raise errors.StorageUnavailable("ListParts did not advance")
            marker = next_marker

    async def get_tail(self, upload_id: str) -> Tail | None:
        try:
            with translated("tail object"):
                resp = await self.client.get_object(Bucket=self.name, Key=self.tail_key(upload_id))
                async with resp["Body"] as body:
                    data = await body.read()
        except FileNotFoundError:
            return None
        return Tail(_tail_start(resp), data)

    async def head_tail(self, upload_id: str) -> TailSize | None:
        try:
            with translated("tail object"):
                resp = await self.client.head_object(Bucket=self.name, Key=self.tail_key(upload_id))
        except FileNotFoundError:
            return None
        return TailSize(_tail_start(resp), resp["ContentLength"])

    async def put_tail(self, upload_id: str, start: int, data: bytes | BinaryIO) -> None:
        check_held()
        with translated("tail object"):
            await self.client.put_object(
                Bucket=self.name,
                Key=self.tail_key(upload_id),
                Body=data,
                Metadata={_TAIL_START: str(start)},
                **self.sse_args(),
            )

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes | BinaryIO
    ) -> str:
        check_held()
        with translated("upload part"):
            resp = await self.client.upload_part(
                Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return resp["ETag"]

    async def complete(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag} for p in parts
        ]
        check_held()
        with translated("complete multipart upload"):
            await self.client.complete_multipart_upload(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

    async def head_size(self, key: str, what: str) -> int:
        """The size of the object at ``key``; ``FileNotFoundError`` if there is none."""
        with translated(what):
            head = await self.client.head_object(Bucket=self.name, Key=key)
        return int(head["ContentLength"])
