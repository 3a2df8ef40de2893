"""Upload bytes in S3 (or any S3-compatible store): one multipart upload per tus upload.

This module owns the S3 layout and the S3 write path's promises:

* keys: data ``{prefix}{id}``, info ``{prefix}{id}.info`` (the upload record as JSON, written at
  creation and on length declaration), tail ``{prefix}{id}.part``;
* incoming bytes are cut into parts of the size planned at creation (``parts.plan_part_size``)
  and uploaded while the body still arrives, bounded per upload and per process;
* a part fills in a ``PartBuffer``: in memory up to ``spool_memory``, then in an anonymous
  temporary file under ``spool_dir``, which is the body S3 receives. Memory per upload is thus
  a small constant (about ``spool_memory`` + one 1 MiB write batch) whatever the part size;
  local disk holds about part size * (parts in flight + 2) per upload, and a part's file is
  closed (so freed) as soon as its upload ends, however it ends;
* bytes that do not fill a part (S3 refuses non-final parts below 5 MiB) are stored as the tail
  object, which the next write (on any instance) prepends; no part below 5 MiB is ever made
  except the last one, which ``finish`` uploads from the tail;
* ``on_progress`` only hears of bytes that are durable: the contiguous prefix of uploaded parts,
  or a stored tail. A tail is deleted before progress is reported past its first byte, so
  storage alone never counts a byte twice;
* which parts are valid is decided from the offset the caller knows (and the tail's recorded
  start), never by trusting everything ListParts returns: a failed concurrent write may leave
  a part after a gap, which later writes overwrite and ``finish`` leaves out;
* a writer holding a Redis lock stops before any of these writes once its lease has lapsed
  or was lost (``check_held``, a local clock test), so a stale instance cannot put a part,
  tail or object after another instance took the upload over. What may still land is a
  request already on the wire when the lease lapsed (the pause was in S3's hands). That
  is harmless by construction: part ``n`` always holds the same byte range of the upload
  (part size fixed at creation), so a stale part ``n`` holds bytes the client sent for
  that very range, and state (fenced in Redis, see ``tusserver.state.fence``) alone says
  how many parts count; a stale tail records its start and is ignored unless it starts
  where the counted parts end;
* S3 errors are translated here: a missing upload or object is ``FileNotFoundError`` (what the
  store contract means by "data missing"); outages and 5xx are ``StorageUnavailable`` (503).

The upload record can be rebuilt from S3 alone (``recover``): info object + ListParts + tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NamedTuple

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from tusserver import errors
from tusserver.models import UploadInfo
from tusserver.state.fence import check_held
from tusserver.storage.base import (
    SIDECAR_NAMES,
    KnownCheck,
    ProgressCallback,
    check_sidecar_name,
)
from tusserver.storage.partbuffer import PartBuffer
from tusserver.storage.parts import MAX_OBJECT as MAX_OBJECT_SIZE
from tusserver.storage.parts import MAX_PART, MAX_PARTS, MIN_PART, plan_part_size

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("tusserver.storage")

_ID = re.compile(r"[0-9a-f]{32}")
_MiB = 1024 * 1024
_READ_PIECE = _MiB
# S3 "safe characters" only, in non-empty segments each ending with '/': no leading '/', no
# '//', and '.'/'..' segments are refused separately.
_PREFIX = re.compile(r"(?:[A-Za-z0-9!_.*'()-]+/)*")
_MAX_PREFIX = 512
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_META_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# S3 caps user metadata at 2 KiB per object (keys plus values) and a request's headers at
# 8 KiB; each key is sent twice (its x-amz-meta- header, and SigV4's SignedHeaders list).
# What does not fit is left out, not an error: the full metadata is in the state store (and
# the .info object), the object's own metadata is a convenience. The pair count keeps the
# request well inside servers that count header lines (Python's http.server, under moto,
# refuses more than 100 with a 431) and, with the budget, inside the 8 KiB.
_META_BUDGET = 2000
_META_MAX_PAIRS = 32
# Kept first, so the object still says what it is when other keys are left out.
_META_FIRST = ("filename", "filetype")
# What S3 (or a server in front of it) answers when a request's metadata or headers are
# larger than it takes.
_TOO_LARGE = frozenset({"MetadataTooLarge", "RequestHeaderSectionTooLarge"})
# The tail object records where it starts, so a stale tail is recognised as such.
_TAIL_START = "tus-tail-start"
_MISSING = frozenset({"NoSuchKey", "NoSuchUpload", "NotFound", "404"})
_TRANSIENT = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "NoSuchBucket"}
)


def _check_id(upload_id: str) -> str:
    if not isinstance(upload_id, str) or _ID.fullmatch(upload_id) is None:
        raise ValueError(f"invalid upload id: {upload_id!r}")
    return upload_id


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe key prefix ('' or segments ending with '/')."""
    if (
        len(prefix) > _MAX_PREFIX
        or _PREFIX.fullmatch(prefix) is None
        or any(segment in {".", ".."} for segment in prefix.split("/"))
    ):
        raise ValueError(
            f"invalid S3 key prefix {prefix!r}: use safe characters in segments ending with "
            "'/', without a leading '/', '//' or '..'"
        )
    return prefix


@dataclass(frozen=True)
class S3Config:
    """Everything ``S3Store`` needs besides the client."""

    bucket: str
    prefix: str = ""
    preferred_part_size: int = 16 * _MiB
    fixed_part_size: int | None = None
    max_size: int | None = None
    concurrency: int = 4
    # Shared by every upload of the process: bounds the parts in flight (connections, and
    # the spooled parts they hold on disk).
    parts_in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    # Where parts spill to disk (None: the system temp dir), and the bytes of a part kept in
    # memory before they do.
    spool_dir: Path | None = None
    spool_memory: int = _MiB
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    # ListParts page size (S3's maximum is 1000); tests make it small to exercise paging.
    list_parts_page: int = 1000

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket is required")
        validate_prefix(self.prefix)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.spool_memory < 0:
            raise ValueError("spool_memory must not be negative")
        if not 1 <= self.list_parts_page <= 1000:
            raise ValueError("list_parts_page must be within [1, 1000]")
        if self.sse not in (None, "AES256", "aws:kms"):
            raise ValueError(f"unsupported server-side encryption {self.sse!r}")
        if self.sse == "aws:kms" and not self.kms_key_id:
            raise ValueError("sse=aws:kms needs kms_key_id")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id is only used with sse=aws:kms")
        # Validates the part size settings once, at startup, rather than on the first upload.
        plan_part_size(
            0, preferred=self.preferred_part_size, max_size=None, fixed=self.fixed_part_size
        )


class _Part(NamedTuple):
    number: int
    size: int
    etag: str


class _Cursor(NamedTuple):
    """Where a write continues: the next part number and the offset it starts at."""

    key: str
    upload_id: str
    part_size: int
    number: int
    position: int


class _Tail(NamedTuple):
    start: int  # -1 when the object carries no (valid) start: never matches
    data: bytes


class _TailSize(NamedTuple):
    """Where the tail object starts and how long it is, read without its bytes."""

    start: int  # -1 when the object carries no (valid) start: never matches
    size: int


def _error_code(exc: ClientError) -> tuple[str, int]:
    error: Any = exc.response.get("Error", {})
    meta: Any = exc.response.get("ResponseMetadata", {})
    return str(error.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn S3 failures into the errors the rest of the server understands."""
    try:
        yield
    except ClientError as exc:
        code, status = _error_code(exc)
        if code in _TRANSIENT or status >= 500:
            raise errors.StorageUnavailable() from exc
        if code in _MISSING or status == 404:
            raise FileNotFoundError(f"{what}: {code or status}") from exc
        raise
    except FileNotFoundError:
        raise
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise errors.StorageUnavailable() from exc


@contextlib.contextmanager
def _refusals(what: str) -> Iterator[None]:
    """Around ``_translated``, for requests that carry the upload's object metadata: any
    other 4xx from S3 is a clear error, never a 500. A refusal of the metadata's size is the
    client's to fix (400); anything else (access denied, a bad SSE setting) is the
    operator's, and the client can only retry later (503). Both are logged with S3's code."""
    try:
        yield
    except ClientError as exc:
        code, status = _error_code(exc)
        log.warning("storage.refused", extra={"operation": what, "code": code, "status": status})
        if code in _TOO_LARGE or status in (413, 431):
            raise errors.MetadataTooLarge("the storage refused the upload's metadata") from exc
        raise errors.StorageUnavailable() from exc


@contextlib.contextmanager
def _spooling() -> Iterator[None]:
    """A failure of the local spool is never a ``FileNotFoundError`` taken for missing upload
    data: a full disk or quota is ``InsufficientStorage`` (507), anything else (directory
    gone) an outage of this store (503). The client retries either."""
    try:
        yield
    except OSError as exc:
        log.warning(
            "storage.spool_failed",
            extra={"error": type(exc).__name__, "errno": exc.errno},
        )
        full = errors.storage_full(exc)
        if full is not None:
            raise full from exc
        raise errors.StorageUnavailable() from exc


def _run(parts: Sequence[_Part]) -> list[_Part]:
    """The parts numbered 1, 2, 3... without a gap: only these can hold valid bytes."""
    run: list[_Part] = []
    for part in sorted(parts, key=lambda p: p.number):
        if part.number != len(run) + 1:
            break
        run.append(part)
    return run


def _cumulative(run: Sequence[_Part]) -> list[int]:
    """``ends[j]`` is where the first ``j`` parts end (``ends[0] == 0``)."""
    ends = [0]
    for part in run:
        ends.append(ends[-1] + part.size)
    return ends


def content_type(metadata: dict[str, str | None]) -> str:
    """The object's Content-Type: the client's ``filetype`` if it looks like one."""
    value = metadata.get("filetype")
    if value and _MIME.fullmatch(value):
        return value
    return "application/octet-stream"


def user_metadata(metadata: dict[str, str | None]) -> dict[str, str]:
    """tus metadata as S3 user metadata: ASCII keys, percent-encoded values, at most
    ``_META_MAX_PAIRS`` pairs within ``_META_BUDGET`` bytes; ``filename``/``filetype`` first."""
    out: dict[str, str] = {}
    used = 0
    ordered = sorted(metadata.items(), key=lambda kv: (kv[0] not in _META_FIRST, kv[0]))
    for raw_key, raw_value in ordered:
        if len(out) == _META_MAX_PAIRS:
            break
        key = raw_key.lower()
        if _META_KEY.fullmatch(key) is None or key in out:
            continue
        value = urllib.parse.quote(raw_value or "", safe="")
        if used + len(key) + len(value) > _META_BUDGET:
            continue
        used += len(key) + len(value)
        out[key] = value
    return out


class _EndedWrites:
    """The parts of uploads whose last bytes this process wrote, until ``finish`` takes them.

    Finishing right after the write that ended an upload (the same request, usually) then
    needs no ListParts and no look for a tail: that write deleted any tail before it
    reported its bytes. Only a list that covers the upload exactly, numbered 1..n, is kept.
    A stale list (parts rewritten elsewhere since) makes CompleteMultipartUpload refuse its
    ETags, and ``finish`` falls back to listing. Bounded: uploads that never finish here
    age out, and long part lists, whose listing is a small share of the upload, are not
    kept.
    """

    MAX_UPLOADS = 1024
    MAX_PARTS = 100

    def __init__(self) -> None:
        self._parts: OrderedDict[str, tuple[str, int, list[_Part]]] = OrderedDict()

    def remember(self, upload_id: str, multipart: str, length: int, parts: list[_Part]) -> None:
        self._parts.pop(upload_id, None)
        if not 0 < len(parts) <= self.MAX_PARTS:
            return
        if [p.number for p in parts] != list(range(1, len(parts) + 1)):
            return
        if sum(p.size for p in parts) != length:
            return
        self._parts[upload_id] = (multipart, length, parts)
        while len(self._parts) > self.MAX_UPLOADS:
            self._parts.popitem(last=False)

    def take(self, upload_id: str, multipart: str, length: int) -> list[_Part] | None:
        entry = self._parts.pop(upload_id, None)
        if entry is None or entry[0] != multipart or entry[1] != length:
            return None
        return entry[2]

    def forget(self, upload_id: str) -> None:
        self._parts.pop(upload_id, None)


class _Pipeline:
    """The parts of one write in flight, kept in order, bounded per upload and per process."""

    def __init__(self, store: S3Store, key: str, upload_id: str) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._local = asyncio.Semaphore(store.config.concurrency)
        self._global = store.config.parts_in_flight
        # (where the part ends in the upload, its number, its size, its upload task)
        self._pending: deque[tuple[int, int, int, asyncio.Task[str]]] = deque()
        # The parts this write stored, in order (finish may complete with them).
        self.stored: list[_Part] = []

    async def submit(self, number: int, part: PartBuffer, end: int) -> None:
        """Upload the full ``part`` as part ``number``; this takes ownership of it."""
        try:
            with _spooling():
                body = await part.seal()
            # Waiting here stops the body from being read: that bounds the parts on disk.
            await self._local.acquire()
            try:
                await self._global.acquire()
            except BaseException:
                self._local.release()
                raise
        except BaseException:
            part.close()
            raise
        task = asyncio.create_task(
            self._store._upload_part(self._key, self._upload_id, number, body)
        )
        # A done callback, not a `finally` in the task: it also runs for a task cancelled
        # before it started. The file is freed as soon as the part is uploaded (or not).
        task.add_done_callback(lambda _: self._release(part))
        self._pending.append((end, number, part.size, task))

    def _release(self, part: PartBuffer) -> None:
        self._global.release()
        self._local.release()
        part.close()

    def durable(self) -> tuple[int | None, BaseException | None]:
        """Pop the finished parts at the front, in order.

        Returns where the last successful one ends and the error of a failed one (which
        stays at the front: nothing after it counts).
        """
        end: int | None = None
        while self._pending and self._pending[0][3].done():
            part_end, number, size, task = self._pending[0]
            if task.cancelled():
                return end, asyncio.CancelledError()
            error = task.exception()
            if error is not None:
                return end, error
            self._pending.popleft()
            self.stored.append(_Part(number, size, task.result()))
            end = part_end
        return end, None

    async def wait(self) -> None:
        tasks = [entry[3] for entry in self._pending]
        if tasks:
            await asyncio.wait(tasks)

    async def cancel(self) -> None:
        tasks = [entry[3] for entry in self._pending]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()


class S3Store:
    """DataStore, Terminater, LengthDeferrer, Concater, Reader and Recoverer on S3.

    Not a Truncater: parts are immutable, so a failed checksum is handled by the caller
    (verify on a local spool first). The client is created and closed by the caller.
    """

    def __init__(self, client: S3Client, config: S3Config) -> None:
        self._client = client
        self.config = config
        self._bucket = config.bucket
        self._ended = _EndedWrites()

    @property
    def client(self) -> S3Client:
        """The S3 client (direct uploads presign URLs and complete uploads with it)."""
        return self._client

    async def ping(self) -> None:
        """The bucket answers and our credentials may use it (readiness)."""
        await self._client.head_bucket(Bucket=self._bucket)

    # -- keys and small helpers ----------------------------------------------------------

    def _data_key(self, upload_id: str) -> str:
        return f"{self.config.prefix}{_check_id(upload_id)}"

    def _info_key(self, upload_id: str) -> str:
        return self._data_key(upload_id) + ".info"

    def _tail_key(self, upload_id: str) -> str:
        return self._data_key(upload_id) + ".part"

    def _sse(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.config.sse is not None:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.kms_key_id:
            args["SSEKMSKeyId"] = self.config.kms_key_id
        return args

    def _object_args(self, info: UploadInfo) -> dict[str, Any]:
        metadata = dict(info.metadata)
        return {
            "ContentType": content_type(metadata),
            "Metadata": user_metadata(metadata),
            **self._sse(),
        }

    @staticmethod
    def _multipart(info: UploadInfo) -> tuple[str, int]:
        upload_id = info.storage.get("upload_id")
        part_size = info.storage.get("part_size")
        if not isinstance(upload_id, str) or not isinstance(part_size, int):
            raise ValueError(f"upload {info.id} was not created by the S3 store")
        return upload_id, part_size

    async def _put_info(self, info: UploadInfo) -> None:
        body = json.dumps(info.to_dict(), separators=(",", ":")).encode()
        check_held()
        with _translated("info object"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self._info_key(info.id),
                Body=body,
                ContentType="application/json",
                **self._sse(),
            )

    async def _delete(self, key: str) -> None:
        check_held()
        # Deleting a missing key succeeds in S3: termination and cleanup may repeat.
        with _translated("delete"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)

    async def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError), _translated("abort"):
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )

    async def _list_parts(self, key: str, upload_id: str) -> list[_Part]:
        parts: list[_Part] = []
        marker = 0
        while True:
            with _translated("list parts"):
                resp = await self._client.list_parts(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MaxParts=self.config.list_parts_page,
                    PartNumberMarker=marker,
                )
            parts.extend(
                _Part(p["PartNumber"], p["Size"], p["ETag"]) for p in resp.get("Parts", [])
            )
            if not resp.get("IsTruncated"):
                return parts
            next_marker = resp.get("NextPartNumberMarker", 0)
            if next_marker <= marker:
                raise errors.StorageUnavailable("ListParts did not advance")
            marker = next_marker

    async def _get_tail(self, upload_id: str) -> _Tail | None:
        try:
            with _translated("tail object"):
                resp = await self._client.get_object(
                    Bucket=self._bucket, Key=self._tail_key(upload_id)
                )
                async with resp["Body"] as body:
                    data = await body.read()
        except FileNotFoundError:
            return None
        raw = resp.get("Metadata", {}).get(_TAIL_START, "")
        return _Tail(int(raw) if raw.isdigit() else -1, data)

    async def _head_tail(self, upload_id: str) -> _TailSize | None:
        try:
            with _translated("tail object"):
                resp = await self._client.head_object(
                    Bucket=self._bucket, Key=self._tail_key(upload_id)
                )
        except FileNotFoundError:
            return None
        raw = resp.get("Metadata", {}).get(_TAIL_START, "")
        return _TailSize(int(raw) if raw.isdigit() else -1, resp["ContentLength"])

    def _tail_source(self, upload_id: str) -> dict[str, str]:
        return {"Bucket": self._bucket, "Key": self._tail_key(upload_id)}

    async def _put_tail(self, upload_id: str, start: int, data: bytes | BinaryIO) -> None:
        check_held()
        with _translated("tail object"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self._tail_key(upload_id),
                Body=data,
                Metadata={_TAIL_START: str(start)},
                **self._sse(),
            )

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes | BinaryIO
    ) -> str:
        check_held()
        with _translated("upload part"):
            resp = await self._client.upload_part(
                Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        return resp["ETag"]

    # -- DataStore -----------------------------------------------------------------------

    async def create(self, info: UploadInfo) -> UploadInfo:
        part_size = plan_part_size(
            info.length,
            preferred=self.config.preferred_part_size,
            max_size=self.config.max_size,
            fixed=self.config.fixed_part_size,
        )
        key = self._data_key(info.id)
        with _refusals("create multipart upload"), _translated("create multipart upload"):
            resp = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, **self._object_args(info)
            )
        upload_id = resp["UploadId"]
        created = info.replace(
            storage={**info.storage, "key": key, "upload_id": upload_id, "part_size": part_size}
        )
        try:
            await self._put_info(created)
        except BaseException:
            # No record of it anywhere: do not leave an orphan multipart upload behind.
            with contextlib.suppress(Exception):
                await self._abort(key, upload_id)
            raise
        return created

    async def write(
        self,
        info: UploadInfo,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None = None,
    ) -> int:
        upload_id, part_size = self._multipart(info)
        key = self._data_key(info.id)
        start = info.offset
        # From offset 0 every part is (re)written from the first, so the parts S3 holds do
        # not matter: a first write (creation-with-upload, say) skips the listing. Whether
        # the upload still exists is then learned from the first part it uploads, or
        # checked before a tail is written (see ``_pump``).
        run = _run(await self._list_parts(key, upload_id)) if start else []
        ends = _cumulative(run)
        # The parts wholly below the offset stay; everything from `base` on is (re)written.
        k = max(j for j, end in enumerate(ends) if end <= start)
        base = ends[k]
        carry = b""
        skip = 0
        tail: _Tail | None = None
        if base < start:
            tail = await self._get_tail(info.id)
            if tail is not None and tail.start == base and len(tail.data) >= start - base:
                carry = tail.data[: start - base]
            elif k < len(run):
                # The offset lies inside a part S3 already holds (its progress was never
                # recorded, say the process died first). Parts cannot be rewritten in part,
                # and a tus client resends the same bytes, so those are skipped.
                skip = ends[k + 1] - start
                k += 1
                base = ends[k]
                log.warning(
                    "storage.resent_bytes_skipped",
                    extra={"upload_id": info.id, "offset": start, "skipped": skip},
                )
            else:
                raise FileNotFoundError(f"S3 holds fewer bytes than offset {start} of {info.id}")
        trim = bool(carry) and tail is not None and len(tail.data) > len(carry)
        # The carried bytes start the first part's buffer (spilled to disk if they exceed
        # the memory limit); this frame lets go of them, so they are not held all request.
        buffer = self._part_buffer()
        try:
            with _spooling():
                await buffer.append(carry)
        except BaseException:
            buffer.close()
            raise
        del carry, tail
        return await self._pump(
            info,
            _Cursor(key, upload_id, part_size, k + 1, base),
            buffer,
            kept=run[:k],
            trim=trim,
            skip=skip,
            chunks=chunks,
            on_progress=on_progress,
        )

    def _part_buffer(self) -> PartBuffer:
        return PartBuffer(memory_limit=self.config.spool_memory, spool_dir=self.config.spool_dir)

    async def _pump(
        self,
        info: UploadInfo,
        cursor: _Cursor,
        buffer: PartBuffer,
        *,
        kept: Sequence[_Part],
        trim: bool,
        skip: int,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None,
    ) -> int:
        """Cut ``chunks`` into parts after what ``buffer`` (owned from here on) holds."""
        key, upload_id, part_size = cursor.key, cursor.upload_id, cursor.part_size
        number, position = cursor.number, cursor.position
        first_new = position
        start = info.offset
        reported = start
        # A tail object may hold bytes at or after `first_new`; it must be gone before any
        # progress past them is reported (storage alone would count them twice otherwise).
        tail_may_exist = True

        async def advance(end: int) -> None:
            nonlocal reported, tail_may_exist
            if end <= reported:
                return
            if tail_may_exist and end > first_new:
                await self._delete(self._tail_key(info.id))
                tail_may_exist = False
            reported = end
            if on_progress is not None:
                await on_progress(end)

        async def collect() -> None:
            end, error = pipeline.durable()
            if end is not None:
                await advance(end)
            if error is not None:
                raise error

        pipeline = _Pipeline(self, key, upload_id)
        received = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                # A view of a buffer the producer reuses would change under us: keep bytes.
                view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))
                received += len(view)
                if skip:
                    dropped = min(skip, len(view))
                    skip -= dropped
                    view = view[dropped:]
                    await advance(position - skip)
                while len(view):
                    take = view[: part_size - buffer.size]
                    view = view[len(take) :]
                    with _spooling():
                        await buffer.append(take)
                    if buffer.size == part_size:
                        if number > MAX_PARTS:
                            raise errors.SizeExceeded(
                                f"the upload needs more than {MAX_PARTS} parts of {part_size}"
                            )
                        # The pipeline owns the full buffer from here on (and closes it).
                        full, buffer = buffer, self._part_buffer()
                        await pipeline.submit(number, full, position + part_size)
                        number += 1
                        position += part_size
                await collect()
            await pipeline.wait()
            await collect()
            size = buffer.size
            # S3 takes a last part of any size, so bytes that end the upload go straight
            # into it: no tail object, and no copy of one at finish (one less request and
            # no server-side copy, for nearly every upload).
            ends_upload = received > 0 and position + size == info.length
            if size >= MIN_PART or (size and ends_upload):
                if number > MAX_PARTS:
                    raise errors.SizeExceeded()
                with _spooling():
                    body = await buffer.seal()
                etag = await self._upload_part(key, upload_id, number, body)
                buffer.close()
                await advance(position + size)
                pipeline.stored.append(_Part(number, size, etag))
            elif size and (received or trim):
                if not info.offset and number == cursor.number:
                    # No listing and no part uploaded: nothing has shown that the multipart
                    # upload still exists, and a tail of a terminated one would be orphaned.
                    await self._list_parts(key, upload_id)
                # Replaces any older tail in one step; the bytes before it are in parts.
                with _spooling():
                    body = await buffer.seal()
                await self._put_tail(info.id, position, body)
                buffer.close()
                tail_may_exist = False
                await advance(position + size)
            if reported == info.length and not tail_may_exist:
                self._ended.remember(info.id, upload_id, info.length, [*kept, *pipeline.stored])
            return reported - start
        except asyncio.CancelledError:
            buffer.close()
            await pipeline.cancel()
            raise
        except BaseException:
            # Whatever failed (the client, S3, a callback): report what is durable, then let
            # the error propagate. The buffered bytes are dropped: the offset never moved past
            # them, so the client sends them again.
            buffer.close()
            await pipeline.wait()
            with contextlib.suppress(Exception):
                end, _ = pipeline.durable()
                if end is not None:
                    await advance(end)
            await pipeline.cancel()
            raise
        finally:
            # Also on success: a buffer left unsealed (nothing to store) holds memory or a file.
            buffer.close()

    async def finish(self, info: UploadInfo) -> UploadInfo:
        if info.length is None:
            raise ValueError(f"upload {info.id} has no length to finish at")
        upload_id, _ = self._multipart(info)
        key = self._data_key(info.id)
        ended = self._ended.take(info.id, upload_id, info.length)
        if ended is not None:
            try:
                await self._complete(key, upload_id, ended)
            except (FileNotFoundError, ClientError):
                # Parts rewritten since (InvalidPart), or the upload completed or removed
                # meanwhile (NoSuchUpload): the listing below finds out which. An outage
                # (StorageUnavailable) is not retried here: botocore already did.
                log.info("storage.finish_relisted", extra={"upload_id": info.id})
            else:
                return info
        try:
            parts = await self._list_parts(key, upload_id)
        except FileNotFoundError:
            # No multipart upload: finished before (finish may be called again after a
            # crash) if the object exists, else terminated (FileNotFoundError from head).
            with _translated("data object"):
                await self._client.head_object(Bucket=self._bucket, Key=key)
            await self._delete(self._tail_key(info.id))
            return info
        run = _run(parts)
        ends = _cumulative(run)
        # The tail's bytes never pass through this process: S3 copies them into the last
        # part (or the object) itself. 100 uploads finishing together held 100 tails.
        tail = await self._head_tail(info.id)
        chosen: list[_Part] | None = None
        last = 0  # bytes of the tail that end the upload
        for j, end in enumerate(ends):
            if tail is not None and tail.start == end and end + tail.size >= info.length:
                chosen, last = run[:j], info.length - end
                break
            if end == info.length:
                chosen = run[:j]
                break
        if chosen is None:
            raise FileNotFoundError(f"S3 holds fewer than {info.length} bytes of {info.id}")
        if not chosen:
            # Under 5 MiB in all (or empty): one plain object; S3 cannot complete a multipart
            # upload without parts. Written before the abort, so a retry finds the upload.
            await self._store_small(info, key, last, tail)
            await self._abort(key, upload_id)
        else:
            completed = list(chosen)
            if last:
                number = len(chosen) + 1
                check_held()
                with _translated("upload part copy"):
                    resp = await self._client.upload_part_copy(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=self._tail_source(info.id),  # type: ignore[arg-type]
                        CopySourceRange=f"bytes=0-{last - 1}",
                    )
                completed.append(_Part(number, last, resp["CopyPartResult"]["ETag"]))
            await self._complete(key, upload_id, completed)
        if tail is not None:  # finish runs under the upload's lock: no tail appeared since
            await self._delete(self._tail_key(info.id))
        return info

    async def _complete(self, key: str, upload_id: str, parts: Sequence[_Part]) -> None:
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag} for p in parts
        ]
        check_held()
        with _translated("complete multipart upload"):
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

    async def _store_small(
        self, info: UploadInfo, key: str, size: int, tail: _TailSize | None
    ) -> None:
        """Write the whole upload, ``size`` bytes at the start of the tail, as the object."""
        check_held()
        if tail is not None and tail.size == size and size:
            with _refusals("copy object"), _translated("copy object"):
                await self._client.copy_object(
                    Bucket=self._bucket,
                    Key=key,
                    CopySource=self._tail_source(info.id),  # type: ignore[arg-type]
                    MetadataDirective="REPLACE",
                    **self._object_args(info),
                )
            return
        # Empty, or a tail longer than the upload (never written by us): by value.
        data = b""
        if size:
            full = await self._get_tail(info.id)
            if full is None or len(full.data) < size:
                raise FileNotFoundError(f"S3 holds fewer than {info.length} bytes of {info.id}")
            data = full.data[:size]
        check_held()
        with _refusals("put object"), _translated("put object"):
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, **self._object_args(info)
            )

    # -- Terminater ----------------------------------------------------------------------

    async def terminate(self, info: UploadInfo) -> None:
        self._ended.forget(info.id)
        key = self._data_key(info.id)
        upload_id = info.storage.get("upload_id")
        if isinstance(upload_id, str):
            await self._abort(key, upload_id)
        sidecars = [self._sidecar_key(info.id, name) for name in SIDECAR_NAMES]
        for doomed in (self._tail_key(info.id), key, *sidecars, self._info_key(info.id)):
            await self._delete(doomed)

    # -- OrphanSweeper --------------------------------------------------------------------

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        """Abort multipart uploads under our prefix that no state knows (and that cannot be
        rebuilt from an info object), started before ``older_than``: parts nobody will ever
        complete are billed storage until aborted."""
        pattern = re.compile(re.escape(self.config.prefix) + r"([0-9a-f]{32})")
        doomed: list[tuple[str, str, str]] = []
        paginator = self._client.get_paginator("list_multipart_uploads")
        with _translated("list multipart uploads"):
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=self.config.prefix):
                for upload in page.get("Uploads", []):
                    key, multipart_id = upload.get("Key", ""), upload.get("UploadId", "")
                    match = pattern.fullmatch(key)
                    initiated = upload.get("Initiated")
                    if match is None or not multipart_id or initiated is None:
                        continue  # not one of ours (another tool shares the bucket)
                    if initiated.timestamp() < older_than:
                        doomed.append((match.group(1), key, multipart_id))
        aborted = 0
        for upload_id, key, multipart_id in doomed:
            if await is_known(upload_id):
                continue
            await self._abort(key, multipart_id)
            await self._delete(self._tail_key(upload_id))
            log.warning("storage.orphan_aborted", extra={"upload_id": upload_id})
            aborted += 1
        return aborted

    # -- Locator -------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return "s3"

    def storage_key(self, info: UploadInfo) -> str:
        return self._data_key(info.id)

    async def media_source(self, info: UploadInfo, ttl: int) -> str:
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self._data_key(info.id)},
            ExpiresIn=ttl,
        )
        return url

    async def stored_size(self, info: UploadInfo) -> int | None:
        try:
            with _translated("head object"):
                head = await self._client.head_object(
                    Bucket=self._bucket, Key=self._data_key(info.id)
                )
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    # -- Presigner -----------------------------------------------------------------------

    async def presign_get(
        self, info: UploadInfo, *, ttl: int, content_type: str, disposition: str
    ) -> str:
        # S3 answers with these headers instead of the object's own: the safe, sanitized
        # ones we chose, not whatever the uploader declared.
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": self._data_key(info.id),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=ttl,
        )
        return url

    # -- Sidecars ------------------------------------------------------------------------

    def _sidecar_key(self, upload_id: str, name: str) -> str:
        return f"{self._data_key(upload_id)}.{check_sidecar_name(name)}"

    async def put_sidecar(self, info: UploadInfo, name: str, data: bytes) -> str:
        key = self._sidecar_key(info.id, name)
        content = "image/jpeg" if name.endswith(".jpg") else "application/octet-stream"
        with _translated("put sidecar"):
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content, **self._sse()
            )
        return key

    async def get_sidecar(self, info: UploadInfo, name: str) -> bytes | None:
        key = self._sidecar_key(info.id, name)
        try:
            with _translated("get sidecar"):
                resp = await self._client.get_object(Bucket=self._bucket, Key=key)
                async with resp["Body"] as body:
                    data: bytes = await body.read()
        except FileNotFoundError:
            return None
        return data

    # -- LengthDeferrer ------------------------------------------------------------------

    async def declare_length(self, info: UploadInfo) -> UploadInfo:
        # The part size stays as planned: parts already uploaded used it. The info object is
        # rewritten so a rebuilt record knows the length too.
        if info.length is not None and info.length > min(
            self.config.max_size or MAX_OBJECT_SIZE, MAX_OBJECT_SIZE
        ):
            raise errors.SizeExceeded()
        await self._put_info(info)
        return info

    # -- Concater ------------------------------------------------------------------------

    async def concat(self, final: UploadInfo, partials: Sequence[UploadInfo]) -> None:
        sources: list[tuple[str, int]] = []
        for partial in partials:
            if partial.length is None:
                raise ValueError(f"partial upload {partial.id} has no length")
            if partial.length:
                sources.append((self._data_key(partial.id), partial.length))
        upload_id, _ = self._multipart(final)
        key = self._data_key(final.id)
        # A tail left by an earlier, interrupted attempt must not be taken for these bytes.
        await self._delete(self._tail_key(final.id))
        if sources and all(length >= MIN_PART for _, length in sources[:-1]):
            await self._concat_by_copy(key, upload_id, sources)
        else:
            # Some partial is too small to be a part of its own: stream the bytes through
            # the ordinary write path (bounded memory), which cuts them into parts.
            await self.write(final.replace(offset=0), self._stream_objects(sources))

    async def _concat_by_copy(
        self, key: str, upload_id: str, sources: Sequence[tuple[str, int]]
    ) -> None:
        jobs: list[tuple[int, str, str | None]] = []
        for source, length in sources:
            pieces = -(-length // MAX_PART)
            if pieces == 1:
                jobs.append((len(jobs) + 1, source, None))
                continue
            # Over 5 GiB: several ranged copies of nearly equal size, each well above 5 MiB.
            size = -(-length // pieces)
            for first in range(0, length, size):
                last = min(first + size, length) - 1
                jobs.append((len(jobs) + 1, source, f"bytes={first}-{last}"))
        if len(jobs) > MAX_PARTS:
            raise errors.SizeExceeded()
        limit = asyncio.Semaphore(self.config.concurrency)

        async def copy(number: int, source: str, byte_range: str | None) -> None:
            extra: dict[str, Any] = {"CopySourceRange": byte_range} if byte_range else {}
            async with limit, self.config.parts_in_flight:
                check_held()
                with _translated(f"copy {source}"):
                    await self._client.upload_part_copy(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": self._bucket, "Key": source},
                        **extra,
                    )

        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(copy(*job))

    async def _stream_objects(self, sources: Sequence[tuple[str, int]]) -> AsyncIterator[bytes]:
        for source, length in sources:
            seen = 0
            async for piece in self._get_range(source, 0, length):
                seen += len(piece)
                yield piece
            if seen != length:
                raise FileNotFoundError(f"{source} holds {seen} bytes, expected {length}")

    # -- Reader --------------------------------------------------------------------------

    async def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield ``[start, end)`` of the finished object; stops early if it is shorter."""
        async for piece in self._get_range(self._data_key(info.id), start, end):
            yield piece

    async def _get_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        if start >= end:
            return
        try:
            with _translated(f"get {key}"):
                resp = await self._client.get_object(
                    Bucket=self._bucket, Key=key, Range=f"bytes={start}-{end - 1}"
                )
        except ClientError as exc:
            if _error_code(exc)[0] == "InvalidRange":
                return  # starts past the end of the object
            raise
        body = resp["Body"]
        try:
            while True:
                with _translated(f"get {key}"):
                    piece = await body.read(_READ_PIECE)
                if not piece:
                    return
                yield piece
        finally:
            body.close()

    # -- Recoverer -----------------------------------------------------------------------

    async def recover(self, upload_id: str) -> UploadInfo | None:
        info_key = self._info_key(upload_id)
        try:
            with _translated("info object"):
                resp = await self._client.get_object(Bucket=self._bucket, Key=info_key)
                async with resp["Body"] as body:
                    raw = await body.read()
        except FileNotFoundError:
            return None
        info = UploadInfo.from_dict(json.loads(raw))
        if info.id != upload_id:
            raise ValueError(f"info object {info_key} describes upload {info.id}")
        key = self._data_key(upload_id)
        multipart = info.storage.get("upload_id")
        try:
            if not isinstance(multipart, str):
                raise FileNotFoundError(key)
            parts = await self._list_parts(key, multipart)
        except FileNotFoundError:
            # No multipart upload any more: finished (the object exists) or half-terminated.
            try:
                with _translated("data object"):
                    head = await self._client.head_object(Bucket=self._bucket, Key=key)
            except FileNotFoundError:
                return None
            finished_at = info.finished_at or head["LastModified"].timestamp()
            return info.replace(offset=head["ContentLength"], finished_at=finished_at)
        run = _run(parts)
        ends = _cumulative(run)
        offset = ends[-1]
        tail = await self._head_tail(upload_id)
        if tail is not None and tail.start in ends:
            # A tail always ends the durable bytes; parts past its start were never reported.
            offset = tail.start + tail.size
        if info.length is not None:
            offset = min(offset, info.length)
        return info.replace(offset=offset)
