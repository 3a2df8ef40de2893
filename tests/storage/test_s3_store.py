"""S3-only behaviours the contract suite cannot see: the tail object, part sizes, the
concurrency bounds, recovery from S3 alone, cleanup, encryption, keys and metadata."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.services_s3 import S3ClientFactory, moto_s3_endpoint, s3_bucket_client
from tusserver import errors
from tusserver.models import ConcatKind, UploadInfo
from tusserver.storage.s3 import S3Config, S3Store, content_type, user_metadata, validate_prefix

__all__ = ["moto_s3_endpoint", "s3_bucket_client"]  # fixtures used by name

KiB = 1024
MiB = 1024 * KiB


def make_info(**fields: Any) -> UploadInfo:
    fields.setdefault("length", None)
    return UploadInfo(id=uuid.uuid4().hex, **fields)


def pattern(start: int, size: int) -> bytes:
    base = bytes(range(251))
    reps = (start % 251 + size) // 251 + 1
    return (base * reps)[start % 251 : start % 251 + size]


async def feed(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def split(data: bytes, size: int = 256 * KiB) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class Counting:
    """Wraps the client: counts upload_part calls in flight, can fail chosen part numbers."""

    def __init__(self, client: Any, fail_parts: Iterable[int] = ()) -> None:
        self._client = client
        self.in_flight = 0
        self.peak = 0
        self.fail_parts = set(fail_parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload_part(self, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # keep parts overlapping long enough to be counted
            if kwargs["PartNumber"] in self.fail_parts:
                raise ClientError(
                    {
                        "Error": {"Code": "InternalError"},
                        "ResponseMetadata": {"HTTPStatusCode": 500},
                    },
                    "UploadPart",
                )
            return await self._client.upload_part(**kwargs)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def s3(s3_bucket_client: S3ClientFactory) -> AsyncIterator[tuple[Any, str]]:
    async with s3_bucket_client() as pair:
        yield pair


def make_store(client: Any, bucket: str, **config: Any) -> S3Store:
    config.setdefault("preferred_part_size", 5 * MiB)
    config.setdefault("list_parts_page", 2)
    return S3Store(client, S3Config(bucket=bucket, **config))


async def read_all(store: S3Store, info: UploadInfo) -> bytes:
    assert info.length is not None
    return b"".join([piece async for piece in store.read(info, 0, info.length)])


async def parts_of(client: Any, bucket: str, info: UploadInfo) -> list[int]:
    resp = await client.list_parts(
        Bucket=bucket, Key=info.storage["key"], UploadId=info.storage["upload_id"]
    )
    return [part["Size"] for part in resp.get("Parts", [])]


async def keys(client: Any, bucket: str) -> set[str]:
    resp = await client.list_objects_v2(Bucket=bucket)
    return {obj["Key"] for obj in resp.get("Contents", [])}


async def write(store: S3Store, info: UploadInfo, data: bytes) -> UploadInfo:
    stored = await store.write(info, feed(split(data)))
    assert stored == len(data)
    return info.replace(offset=info.offset + stored)


async def test_small_patch_makes_a_tail_the_next_one_consumes(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=6 * MiB))
    info = await write(store, info, pattern(0, 1000))
    head = await client.head_object(Bucket=bucket, Key=f"{info.id}.part")
    assert head["ContentLength"] == 1000
    assert await parts_of(client, bucket, info) == []
    # Another instance (a new store object) continues from S3 alone.
    other = make_store(client, bucket)
    info = await write(other, info, pattern(1000, 5 * MiB))
    assert await parts_of(client, bucket, info) == [5 * MiB]
    head = await client.head_object(Bucket=bucket, Key=f"{info.id}.part")
    assert head["ContentLength"] == 1000
    assert head["Metadata"]["tus-tail-start"] == str(5 * MiB)
    info = await write(other, info, pattern(1000 + 5 * MiB, MiB - 1000))
    await other.finish(info)
    assert await read_all(other, info) == pattern(0, 6 * MiB)
    assert await keys(client, bucket) == {info.id, f"{info.id}.info"}


async def test_many_small_patches_never_make_a_small_middle_part(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    size = 12 * MiB + 123
    info = await store.create(make_info(length=size))
    step = 700 * KiB
    while info.offset < size:
        info = await write(store, info, pattern(info.offset, min(step, size - info.offset)))
        sizes = await parts_of(client, bucket, info)
        if info.offset == size:  # only the part that ends the upload may be small
            sizes = sizes[:-1]
        assert all(part >= 5 * MiB for part in sizes)
    assert await parts_of(client, bucket, info) == [5 * MiB, 5 * MiB, 2 * MiB + 123]
    await store.finish(info)
    assert await read_all(store, info) == pattern(0, size)


async def test_an_interrupted_body_keeps_what_arrived(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=20 * MiB))
    # The body reader turns a disconnect into a short iterator.
    progress: list[int] = []

    async def record(offset: int) -> None:
        progress.append(offset)

    stored = await store.write(info, feed(split(pattern(0, 6 * MiB + 5))), record)
    assert stored == 6 * MiB + 5
    assert progress == [5 * MiB, 6 * MiB + 5]
    assert await parts_of(client, bucket, info) == [5 * MiB]
    recovered = await store.recover(info.id)
    assert recovered is not None
    assert recovered.offset == 6 * MiB + 5


async def test_concurrency_per_upload_is_bounded(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    counting = Counting(client)
    store = make_store(counting, bucket, concurrency=2)
    info = await store.create(make_info(length=30 * MiB))
    info = await write(store, info, pattern(0, 30 * MiB))
    assert counting.peak == 2
    await store.finish(info)
    assert await read_all(store, info) == pattern(0, 30 * MiB)


async def test_concurrency_per_process_is_bounded(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    counting = Counting(client)
    shared = asyncio.Semaphore(3)
    stores = [make_store(counting, bucket, concurrency=4, parts_in_flight=shared) for _ in "ab"]
    infos = [await s.create(make_info(length=20 * MiB)) for s in stores]
    await asyncio.gather(*(write(s, i, pattern(0, 20 * MiB)) for s, i in zip(stores, infos)))
    assert counting.peak == 3


async def test_a_failed_part_reports_only_the_durable_prefix(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    counting = Counting(client, fail_parts={2})
    store = make_store(counting, bucket, concurrency=4)
    info = await store.create(make_info(length=20 * MiB))
    progress: list[int] = []

    async def record(offset: int) -> None:
        progress.append(offset)

    with pytest.raises(errors.StorageUnavailable):
        await store.write(info, feed(split(pattern(0, 20 * MiB))), record)
    assert progress == [5 * MiB]
    # Parts 3 and 4 may have landed after the gap; the retry overwrites them and finish
    # completes with exactly the right bytes.
    counting.fail_parts.clear()
    info = info.replace(offset=5 * MiB)
    info = await write(store, info, pattern(5 * MiB, 15 * MiB))
    await store.finish(info)
    assert await read_all(store, info) == pattern(0, 20 * MiB)


class Bodies:
    """Wraps the client: keeps the body of every part and tail upload, as it was passed."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.parts: list[Any] = []
        self.tails: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload_part(self, **kwargs: Any) -> Any:
        self.parts.append(kwargs["Body"])
        await asyncio.sleep(0.02)  # parts overlap, so a cancellation finds some in flight
        return await self._client.upload_part(**kwargs)

    async def put_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith(".part"):
            self.tails.append(kwargs["Body"])
        return await self._client.put_object(**kwargs)

    def files(self) -> list[Any]:
        return [body for body in self.parts + self.tails if not isinstance(body, bytes)]


async def test_parts_spill_to_anonymous_files_and_the_bytes_stay_exact(
    s3: tuple[Any, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, bucket = s3
    bodies = Bodies(client)
    store = make_store(
        bodies, bucket, fixed_part_size=6 * MiB, spool_memory=64 * KiB, spool_dir=tmp_path
    )
    size = 23 * MiB + 12345
    data = os.urandom(size)
    info = await store.create(make_info(length=size))
    caplog.set_level(logging.DEBUG, logger="tusserver.storage")
    # A tail above the memory limit: it spills, and the next write carries it on disk.
    info = await write(store, info, data[: 300 * KiB])
    # Parts 1 and 2 (the first starting with the carried tail), then a 1 MiB tail.
    info = await write(store, info, data[300 * KiB : 13 * MiB])
    # Part 3 (after the carried 1 MiB), then a remainder above 5 MiB: the final part 4.
    info = await write(store, info, data[13 * MiB :])
    spilled = [r for r in caplog.records if r.getMessage() == "storage.part_spilled"]
    assert len(spilled) == 6  # two tails and four parts
    assert len(bodies.parts) == 4
    assert len(bodies.tails) == 2
    assert len(bodies.files()) == 6  # no part or tail was sent from memory
    # Every spooled body was closed once its upload ended; none was ever visible on disk.
    assert all(body.closed for body in bodies.files())
    assert os.listdir(tmp_path) == []
    assert await parts_of(client, bucket, info) == [6 * MiB] * 3 + [5 * MiB + 12345]
    await store.finish(info)
    got = hashlib.sha256(await read_all(store, info)).hexdigest()
    assert got == hashlib.sha256(data).hexdigest()


async def test_spooled_files_are_closed_when_a_write_fails_or_is_cancelled(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    counting = Counting(client, fail_parts={2})
    bodies = Bodies(counting)
    store = make_store(bodies, bucket, concurrency=4, spool_memory=64 * KiB)
    info = await store.create(make_info(length=40 * MiB))
    with pytest.raises(errors.StorageUnavailable):
        await store.write(info, feed(split(pattern(0, 20 * MiB))))
    assert len(bodies.files()) >= 2
    assert all(body.closed for body in bodies.files())

    bodies.parts.clear()
    counting.fail_parts.clear()
    info = info.replace(offset=5 * MiB)
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for piece in split(pattern(5 * MiB, 30 * MiB)):
            if len(bodies.parts) >= 3:
                started.set()
            yield piece
            await asyncio.sleep(0)

    task = asyncio.create_task(store.write(info, slow()))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bodies.files()
    for _ in range(500):  # a file a thread still writes is closed once the thread is done
        if all(body.closed for body in bodies.files()):
            break
        await asyncio.sleep(0.01)
    assert all(body.closed for body in bodies.files())


async def test_a_broken_spool_is_a_503_not_missing_data(
    s3: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = s3
    store = make_store(client, bucket, spool_memory=0, spool_dir=tmp_path / "gone")
    info = await store.create(make_info(length=MiB))
    with pytest.raises(errors.StorageUnavailable):
        await store.write(info, feed([b"x" * 1000]))


async def test_zero_length_upload_is_an_empty_object(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=0, metadata={"filetype": "text/plain"}))
    await store.finish(info)
    await store.finish(info)  # again, as after a crash: still fine
    head = await client.head_object(Bucket=bucket, Key=info.id)
    assert head["ContentLength"] == 0
    assert head["ContentType"] == "text/plain"
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")


@pytest.mark.parametrize(
    ("sizes", "copies"),
    [((5 * MiB, 5 * MiB + 7, 1000), True), ((1000, 5 * MiB + 7, 3), False)],
    ids=["upload-part-copy", "streamed"],
)
async def test_concat_paths_give_exact_bytes(
    s3: tuple[Any, str], sizes: tuple[int, ...], copies: bool
) -> None:
    client, bucket = s3
    counting = Counting(client)
    store = make_store(counting, bucket)
    partials = []
    start = 0
    for size in sizes:
        info = await store.create(make_info(length=size, concat=ConcatKind.PARTIAL))
        info = await write(store, info, pattern(start, size))
        partials.append(await store.finish(info))
        start += size
    total = sum(sizes)
    final = await store.create(
        make_info(concat=ConcatKind.FINAL, partials=tuple(p.id for p in partials))
    )
    uploaded_before = counting.peak
    counting.peak = 0
    await store.concat(final.replace(length=total), partials)
    assert (counting.peak == 0) is copies  # the copy path never uploads bytes itself
    final = await store.finish(final.replace(length=total, offset=total))
    assert await read_all(store, final) == pattern(0, total)
    assert uploaded_before >= 1


async def test_recover_rebuilds_the_offset_from_parts_and_tail(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket, list_parts_page=1)
    assert await store.recover(uuid.uuid4().hex) is None
    info = await store.create(make_info(length=40 * MiB, metadata={"filename": "a.bin"}))
    info = await write(store, info, pattern(0, 16 * MiB + 99))
    assert len(await parts_of(client, bucket, info)) == 3  # three pages of one part each
    recovered = await store.recover(info.id)
    assert recovered is not None
    assert (recovered.offset, recovered.length) == (16 * MiB + 99, 40 * MiB)
    assert recovered.metadata == {"filename": "a.bin"}
    assert recovered.storage == info.storage
    # A deferred length declared later is in the info object too.
    deferred = await store.create(make_info())
    await store.declare_length(deferred.replace(length=10))
    again = await store.recover(deferred.id)
    assert again is not None
    assert again.length == 10
    # A finished upload recovers with its full size.
    info = await write(store, info, pattern(info.offset, 40 * MiB - info.offset))
    await store.finish(info)
    done = await store.recover(info.id)
    assert done is not None
    assert done.offset == 40 * MiB
    assert done.finished_at is not None


async def test_write_below_a_recorded_part_skips_the_resent_bytes(s3: tuple[Any, str]) -> None:
    # S3 holds a part whose progress was never recorded (the process died in between).
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=7 * MiB))
    await write(store, info, pattern(0, 6 * MiB))
    lagging = info.replace(offset=2 * MiB)
    stored = await store.write(lagging, feed(split(pattern(2 * MiB, 5 * MiB))))
    assert stored == 5 * MiB
    info = info.replace(offset=7 * MiB)
    await store.finish(info)
    assert await read_all(store, info) == pattern(0, 7 * MiB)


async def test_terminate_leaves_nothing(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=20 * MiB))
    info = await write(store, info, pattern(0, 7 * MiB))
    await store.terminate(info)
    await store.terminate(info)
    assert await keys(client, bucket) == set()
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")
    assert await store.recover(info.id) is None
    with pytest.raises(FileNotFoundError):
        await store.write(info.replace(offset=7 * MiB), feed([b"late"]))


async def test_bytes_that_end_the_upload_go_straight_into_the_last_part(
    s3: tuple[Any, str],
) -> None:
    # S3 takes a last part of any size: a write that reaches the length leaves no tail, and
    # finish completes the multipart upload without copying anything. Counted with
    # botocore's own event hooks.
    client, bucket = s3
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    store = make_store(client, bucket, fixed_part_size=5 * MiB)
    small = await store.create(make_info(length=3000))
    big = await store.create(make_info(length=5 * MiB + 7))
    calls.clear()
    small = await write(store, small, pattern(0, 3000))
    big = await write(store, big, pattern(0, 5 * MiB + 7))
    assert "PutObject" not in calls  # no tail
    assert await parts_of(client, bucket, small) == [3000]
    assert await parts_of(client, bucket, big) == [5 * MiB, 7]
    calls.clear()
    await store.finish(small)
    await store.finish(big)
    assert calls.count("CompleteMultipartUpload") == 2
    assert not {"GetObject", "CopyObject", "UploadPartCopy", "PutObject"} & set(calls)
    assert await read_all(store, small) == pattern(0, 3000)
    assert await read_all(store, big) == pattern(0, 5 * MiB + 7)
    assert await keys(client, bucket) == {small.id, f"{small.id}.info", big.id, f"{big.id}.info"}


async def test_a_resent_end_of_upload_is_skipped_and_the_bytes_stay_exact(
    s3: tuple[Any, str],
) -> None:
    # The last part was stored but its progress never recorded (the process died first):
    # the client resumes from its last acknowledged offset and sends the same bytes again.
    client, bucket = s3
    store = make_store(client, bucket, fixed_part_size=5 * MiB)
    size = 5 * MiB + 3000
    info = await store.create(make_info(length=size))
    await write(store, info, pattern(0, size))
    acked = info.replace(offset=5 * MiB + 1000)
    # The resend arrives in two requests, the first cut off early.
    stored = await store.write(acked, feed([pattern(5 * MiB + 1000, 500)]))
    assert stored == 500
    info = await write(store, acked.replace(offset=5 * MiB + 1500), pattern(5 * MiB + 1500, 1500))
    assert info.offset == size
    assert await parts_of(client, bucket, info) == [5 * MiB, 3000]
    # A record rebuilt from S3 alone (Redis lost) counts the last part too.
    recovered = await store.recover(info.id)
    assert recovered is not None
    assert recovered.offset == size
    await store.finish(info)
    assert await read_all(store, info) == pattern(0, size)


async def test_a_whole_upload_in_one_write_takes_five_requests(s3: tuple[Any, str]) -> None:
    # Creation-with-upload of a small file: no listing (nothing precedes offset 0), no tail,
    # and finish completes with the parts the write stored, no listing or tail lookup.
    client, bucket = s3
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    store = make_store(client, bucket)
    info = await store.create(make_info(length=16 * KiB))
    info = await write(store, info, pattern(0, 16 * KiB))
    await store.finish(info)
    assert calls == [
        "CreateMultipartUpload",
        "PutObject",  # the info object
        "UploadPart",
        "DeleteObject",  # a stale tail, had an earlier attempt left one
        "CompleteMultipartUpload",
    ]
    assert await read_all(store, info) == pattern(0, 16 * KiB)


async def test_finish_relists_when_a_part_was_rewritten_since_the_write(
    s3: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    # The parts a write remembered went stale (rewritten by another instance, say): S3
    # refuses their ETags, and finish completes with what it lists instead.
    client, bucket = s3
    store = make_store(client, bucket, fixed_part_size=5 * MiB)
    size = 5 * MiB + 100
    info = await store.create(make_info(length=size))
    info = await write(store, info, pattern(0, size))
    await client.upload_part(
        Bucket=bucket,
        Key=info.id,
        UploadId=info.storage["upload_id"],
        PartNumber=2,
        Body=b"z" * 100,
    )
    caplog.set_level(logging.INFO, logger="tusserver.storage")
    await store.finish(info)
    assert any(r.getMessage() == "storage.finish_relisted" for r in caplog.records)
    assert await read_all(store, info) == pattern(0, 5 * MiB) + b"z" * 100


async def test_a_first_write_of_a_tail_to_a_terminated_upload_leaves_nothing(
    s3: tuple[Any, str],
) -> None:
    # Offset 0 lists no parts, so before a tail is written a listing checks that the upload
    # exists: no orphan tail. (A part finds out by itself: S3 answers NoSuchUpload; moto
    # answers 500, so that case is not tested here.)
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=10))
    await store.terminate(info)
    with pytest.raises(FileNotFoundError):
        await store.write(info, feed([b"01234"]))
    assert await keys(client, bucket) == set()


async def test_finish_copies_a_tail_that_ends_the_upload_inside_s3(s3: tuple[Any, str]) -> None:
    # With a deferred length the last bytes arrive before the length: they wait in a tail,
    # and finish makes them the last part (or the object) by server-side copy. The process
    # never downloads them.
    client, bucket = s3
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    store = make_store(client, bucket, fixed_part_size=5 * MiB)
    small = await store.create(make_info())
    small = await write(store, small, pattern(0, 3000))
    big = await store.create(make_info())
    big = await write(store, big, pattern(0, 5 * MiB + 7))
    assert await parts_of(client, bucket, big) == [5 * MiB]
    small = await store.declare_length(small.replace(length=3000))
    big = await store.declare_length(big.replace(length=5 * MiB + 7))
    calls.clear()
    await store.finish(small)
    await store.finish(big)
    assert "GetObject" not in calls
    assert calls.count("CopyObject") == 1
    assert calls.count("UploadPartCopy") == 1
    assert await read_all(store, small) == pattern(0, 3000)
    assert await read_all(store, big) == pattern(0, 5 * MiB + 7)
    assert await keys(client, bucket) == {small.id, f"{small.id}.info", big.id, f"{big.id}.info"}


async def test_a_tail_longer_than_the_upload_is_cut_at_its_length(s3: tuple[Any, str]) -> None:
    # Never written by us, but S3 is shared: the object gets exactly the upload's bytes.
    client, bucket = s3
    store = make_store(client, bucket)
    info = await store.create(make_info(length=10))
    info = await write(store, info, b"0123456789")
    await client.put_object(
        Bucket=bucket,
        Key=f"{info.id}.part",
        Body=b"0123456789abcde",
        Metadata={"tus-tail-start": "0"},
    )
    await store.finish(info)
    assert await read_all(store, info) == b"0123456789"


@pytest.mark.parametrize(("sse", "kms_key_id"), [("AES256", None), ("aws:kms", "alias/tus-test")])
async def test_server_side_encryption_is_requested(
    s3: tuple[Any, str], sse: str, kms_key_id: str | None
) -> None:
    client, bucket = s3
    store = make_store(client, bucket, sse=sse, kms_key_id=kms_key_id)
    info = await store.create(make_info(length=10))
    info = await write(store, info, b"01234")
    tail = await client.head_object(Bucket=bucket, Key=f"{info.id}.part")
    info = await write(store, info, b"56789")
    await store.finish(info)
    for key in (info.id, f"{info.id}.info"):
        head = await client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse
    assert tail["ServerSideEncryption"] == sse


async def test_prefix_content_type_and_metadata(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket, prefix="tenant/uploads/")
    meta = {"filename": "été 2024.mp4", "filetype": "video/mp4", "bad key": "x", "empty": None}
    info = await store.create(make_info(length=3, metadata=meta))
    assert info.storage["key"] == f"tenant/uploads/{info.id}"
    info = await write(store, info, b"abc")
    await store.finish(info)
    head = await client.head_object(Bucket=bucket, Key=info.storage["key"])
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {
        "filename": "%C3%A9t%C3%A9%202024.mp4",
        "filetype": "video%2Fmp4",
        "empty": "",
    }
    assert await keys(client, bucket) == {info.storage["key"], info.storage["key"] + ".info"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("image/png", "image/png"),
        ("application/vnd.api+json", "application/vnd.api+json"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream"),
        ("png", "application/octet-stream"),
        (None, "application/octet-stream"),
    ],
)
def test_content_type(value: str | None, expected: str) -> None:
    assert content_type({"filetype": value}) == expected


def test_user_metadata_stays_within_2_kib() -> None:
    out = user_metadata({f"k{i}": "v" * 100 for i in range(50)})
    assert sum(len(k) + len(v) for k, v in out.items()) <= 2000
    assert out


@pytest.mark.parametrize("prefix", ["", "uploads/", "a/b-c/d_e.f/", "x!*'()/"])
def test_good_prefixes(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix
    assert S3Config(bucket="b", prefix=prefix).prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "/uploads/",
        "uploads",
        "a//b/",
        "../x/",
        "a/../b/",
        "./",
        "a b/",
        "é/",
        "a\\b/",
        "x" * 600 + "/",
    ],
)
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        S3Config(bucket="b", prefix=prefix)


@pytest.mark.parametrize(
    "config",
    [
        {"sse": "aws:kms"},
        {"kms_key_id": "k"},
        {"sse": "rot13"},
        {"concurrency": 0},
        {"fixed_part_size": 1},
        {"list_parts_page": 0},
        {"spool_memory": -1},
    ],
)
def test_bad_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        S3Config(bucket="b", **config)


async def test_over_5_tib_is_413(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    store = make_store(client, bucket)
    with pytest.raises(errors.SizeExceeded):
        await store.create(make_info(length=5 * 1024**4 + 1))
