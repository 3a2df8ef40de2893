"""The byte-store contract: every backend, driven only through the storage protocols.

A test that needs an optional capability skips when the backend lacks it. "Missing upload
data" is ``FileNotFoundError`` on every backend (adapters translate their own errors).

Bytes are read back only after ``finish``: that is when the HTTP layer serves them (GET of an
unfinished upload is a 409), and an object store cannot read an unfinished multipart upload.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tusserver.models import ConcatKind, UploadInfo
from tusserver.storage.base import StoreComposer

T = TypeVar("T")
KiB = 1024
MiB = 1024 * KiB


def make_info(**fields: Any) -> UploadInfo:
    fields.setdefault("length", None)
    return UploadInfo(id=uuid.uuid4().hex, **fields)


def need(capability: T | None) -> T:
    if capability is None:
        pytest.skip("backend lacks this capability")
    return capability


async def feed(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def pattern(start: int, size: int) -> bytes:
    """Deterministic bytes where every position has its own value (period 251, a prime)."""
    base = bytes(range(251))
    reps = (start % 251 + size) // 251 + 1
    return (base * reps)[start % 251 : start % 251 + size]


async def read_all(store: StoreComposer, info: UploadInfo, start: int, end: int) -> bytes:
    reader = need(store.reader)
    return b"".join([piece async for piece in reader.read(info, start, end)])


async def created(store: StoreComposer, **fields: Any) -> UploadInfo:
    return await store.core.create(make_info(**fields))


async def write_bytes(store: StoreComposer, info: UploadInfo, data: bytes) -> UploadInfo:
    """Write ``data`` at ``info.offset`` in 1000-byte chunks; return the advanced info."""
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    stored = await store.core.write(info, feed(chunks))
    assert stored == len(data)
    return info.replace(offset=info.offset + stored)


async def test_create_write_read_round_trip(store: StoreComposer) -> None:
    info = await created(store, length=11)
    stored = await store.core.write(info, feed([b"hello", b" ", b"world"]))
    assert stored == 11
    info = await store.core.finish(info.replace(offset=11))
    assert await read_all(store, info, 0, 11) == b"hello world"
    assert await read_all(store, info, 3, 8) == b"lo wo"


async def test_create_returns_the_same_upload(store: StoreComposer) -> None:
    info = make_info(length=5, metadata={"filename": "a.txt"})
    got = await store.core.create(info)
    assert (got.id, got.length, got.offset, got.metadata) == (info.id, 5, 0, info.metadata)


async def test_several_writes_append(store: StoreComposer) -> None:
    info = await created(store, length=3000)
    for start in (0, 1000, 2000):
        assert info.offset == start
        info = await write_bytes(store, info, pattern(start, 1000))
    info = await store.core.finish(info)
    assert await read_all(store, info, 0, 3000) == pattern(0, 3000)


async def test_interrupted_client_keeps_what_arrived(store: StoreComposer) -> None:
    # The body reader turns a disconnect into a clean end of stream: a short iterator.
    info = await created(store, length=10_000)
    stored = await store.core.write(info, feed([pattern(0, 1000), pattern(1000, 2000)]))
    assert stored == 3000
    # The client resumes where the server says it stopped; the read after finish shows the
    # first 3000 bytes were kept (the resumed write starts after them).
    info = await write_bytes(store, info.replace(offset=3000), pattern(3000, 7000))
    info = await store.core.finish(info)
    assert await read_all(store, info, 0, 10_000) == pattern(0, 10_000)


async def test_failing_iterator_raises_and_a_retry_succeeds(store: StoreComposer) -> None:
    info = await created(store, length=4000)

    async def broken() -> AsyncIterator[bytes]:
        yield pattern(0, 1000)
        raise ConnectionResetError("client went away")

    progress: list[int] = []

    async def record(offset: int) -> None:
        progress.append(offset)

    with pytest.raises(ConnectionResetError):
        await store.core.write(info, broken(), record)
    assert all(offset <= 1000 for offset in progress)
    # The offset did not move; the retry overwrites whatever the failed call left.
    info = await write_bytes(store, info, pattern(0, 4000))
    info = await store.core.finish(info)
    assert await read_all(store, info, 0, 4000) == pattern(0, 4000)


async def test_write_below_the_end_overwrites_stale_bytes(store: StoreComposer) -> None:
    # The stale bytes do not end the upload: on S3 they wait in the tail object, which can
    # be rewritten. (Bytes that end an upload go into its last part, which S3 cannot
    # rewrite in part: a resend of those is skipped, like a resend of any part.)
    info = await created(store, length=200)
    # 100 bytes written but only 50 acknowledged (say the response was lost).
    await write_bytes(store, info, b"x" * 100)
    acked = info.replace(offset=50)
    stored = await store.core.write(acked, feed([b"y" * 20]))
    assert stored == 20
    if store.reconciler is not None:
        # Nothing of the stale tail survives past the new end.
        claimed = await store.reconciler.reconcile(info.replace(offset=100))
        assert claimed.offset == 70
    info = await write_bytes(store, info.replace(offset=70), b"z" * 130)
    info = await store.core.finish(info)
    assert await read_all(store, info, 0, 200) == b"x" * 50 + b"y" * 20 + b"z" * 130


async def test_progress_is_absolute_increasing_and_never_ahead(store: StoreComposer) -> None:
    info = await created(store, length=5 * MiB)
    info = await write_bytes(store, info, pattern(0, 1000))
    total = 5 * MiB - 1000
    sent = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal sent
        position = 1000
        while position < 5 * MiB:
            piece = pattern(position, min(64 * KiB, 5 * MiB - position))
            sent += len(piece)
            position += len(piece)
            yield piece

    progress: list[tuple[int, int]] = []

    async def record(offset: int) -> None:
        progress.append((offset, 1000 + sent))

    stored = await store.core.write(info, source(), record)
    assert stored == total
    assert progress, "a multi-MiB write should checkpoint at least once"
    offsets = [offset for offset, _ in progress]
    assert offsets == sorted(set(offsets)), "strictly increasing"
    for offset, received in progress:
        # Absolute offsets, never beyond what the client had sent at that moment.
        assert 1000 < offset <= received
        assert offset <= info.offset + stored
    info = await store.core.finish(info.replace(offset=info.offset + stored))
    assert await read_all(store, info, 0, 5 * MiB) == pattern(0, 5 * MiB)


async def test_empty_write_stores_nothing(store: StoreComposer) -> None:
    info = await created(store, length=10)
    assert await store.core.write(info, feed([])) == 0
    assert await store.core.write(info, feed([b"", b""])) == 0
    info = await write_bytes(store, info, b"0123456789")
    assert await store.core.write(info, feed([])) == 0
    info = await store.core.finish(info)
    assert await read_all(store, info, 0, 10) == b"0123456789"


async def test_large_write_is_exact(store: StoreComposer) -> None:
    size = 20 * MiB
    info = await created(store, length=size)
    digest = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // (64 * KiB)):
            chunk = os.urandom(64 * KiB)
            digest.update(chunk)
            yield chunk

    assert await store.core.write(info, source()) == size
    info = await store.core.finish(info.replace(offset=size))
    readback = hashlib.sha256()
    count = 0
    async for piece in need(store.reader).read(info, 0, size):
        readback.update(piece)
        count += len(piece)
    assert count == size
    assert readback.hexdigest() == digest.hexdigest()


async def test_finish_and_declare_length_keep_the_upload(store: StoreComposer) -> None:
    deferrer = need(store.length_deferrer)
    info = await created(store)
    info = await write_bytes(store, info, b"abc")
    declared = await deferrer.declare_length(info.replace(length=6))
    assert (declared.id, declared.length, declared.offset) == (info.id, 6, 3)
    info = await write_bytes(store, declared, b"def")
    finished = await store.core.finish(info)
    assert finished.id == info.id
    assert await read_all(store, finished, 0, 6) == b"abcdef"


async def test_concat_in_order_with_repeats_and_empty_partials(store: StoreComposer) -> None:
    concater = need(store.concater)
    parts: list[UploadInfo] = []
    for data in (pattern(0, 3000), b"", pattern(7, 1234)):
        info = await created(store, length=len(data), concat=ConcatKind.PARTIAL)
        if data:
            info = await write_bytes(store, info, data)
        parts.append(await store.core.finish(info))
    a, empty, b = parts
    order = [a, b, empty, a]
    expected = pattern(0, 3000) + pattern(7, 1234) + pattern(0, 3000)
    final = make_info(
        length=len(expected), concat=ConcatKind.FINAL, partials=tuple(p.id for p in order)
    )
    final = await store.core.create(final)
    await concater.concat(final, order)
    final = await store.core.finish(final.replace(offset=len(expected)))
    assert await read_all(store, final, 0, len(expected)) == expected
    # Partials stay untouched.
    assert await read_all(store, a, 0, 3000) == pattern(0, 3000)
    assert await read_all(store, b, 0, 1234) == pattern(7, 1234)


async def test_terminate_removes_the_data(store: StoreComposer) -> None:
    terminater = need(store.terminater)
    info = await created(store, length=10)
    info = await write_bytes(store, info, b"0123456789")
    info = await store.core.finish(info)
    await terminater.terminate(info)
    with pytest.raises(FileNotFoundError):
        await read_all(store, info, 0, 10)
    await terminater.terminate(info)  # twice is fine


async def test_write_to_a_terminated_upload_fails(store: StoreComposer) -> None:
    terminater = need(store.terminater)
    info = await created(store, length=10)
    await terminater.terminate(info)
    with pytest.raises(FileNotFoundError):
        await store.core.write(info, feed([b"late"]))


async def test_truncate_drops_the_tail(store: StoreComposer) -> None:
    truncater = need(store.truncater)
    info = await created(store, length=100)
    info = await write_bytes(store, info, pattern(0, 100))
    await truncater.truncate(info, 40)
    if store.reconciler is not None:
        assert (await store.reconciler.reconcile(info)).offset == 40
    info = await write_bytes(store, info.replace(offset=40), b"!" * 60)
    assert await read_all(store, info, 0, 100) == pattern(0, 40) + b"!" * 60


async def test_reconcile_lowers_an_offset_beyond_the_stored_bytes(
    store: StoreComposer,
) -> None:
    reconciler = need(store.reconciler)
    info = await created(store, length=1000)
    info = await write_bytes(store, info, pattern(0, 300))
    assert (await reconciler.reconcile(info.replace(offset=500))).offset == 300
    assert await reconciler.reconcile(info) == info
    # Holding more than recorded (an unacknowledged tail) is not a reason to move.
    behind = info.replace(offset=100)
    assert await reconciler.reconcile(behind) == behind


async def test_reconcile_a_fresh_upload_is_a_no_op(store: StoreComposer) -> None:
    reconciler = need(store.reconciler)
    info = await created(store, length=10)
    assert await reconciler.reconcile(info) == info
    pending_final = make_info(length=10, concat=ConcatKind.FINAL)
    assert await reconciler.reconcile(pending_final) == pending_final


async def test_sidecars_round_trip_and_go_with_the_upload(store: StoreComposer) -> None:
    sidecars = need(store.sidecars)
    terminater = need(store.terminater)
    info = await created(store, length=3)
    info = await store.core.finish(await write_bytes(store, info, b"abc"))
    assert await sidecars.get_sidecar(info, "thumb.jpg") is None
    key = await sidecars.put_sidecar(info, "thumb.jpg", b"\xff\xd8\xff first")
    await sidecars.put_sidecar(info, "thumb.jpg", b"\xff\xd8\xff second")  # replaces
    assert info.id in key
    assert await sidecars.get_sidecar(info, "thumb.jpg") == b"\xff\xd8\xff second"
    # The upload's own bytes are untouched by its sidecar.
    assert await read_all(store, info, 0, 3) == b"abc"
    with pytest.raises(ValueError, match="unknown sidecar"):
        await sidecars.put_sidecar(info, "../../evil", b"x")
    await terminater.terminate(info)
    assert await sidecars.get_sidecar(info, "thumb.jpg") is None


async def test_the_locator_names_the_key_and_a_readable_source(store: StoreComposer) -> None:
    locator = need(store.locator)
    info = await created(store, length=5)
    info = await store.core.finish(await write_bytes(store, info, b"12345"))
    key = locator.storage_key(info)
    assert info.id in key
    assert ".." not in key
    assert not key.startswith("/")
    source = await locator.media_source(info, 60)
    if source.startswith("http"):
        # A presigned GET: fetching it returns the bytes, no credentials needed.
        import urllib.request

        with urllib.request.urlopen(source, timeout=10) as response:
            assert response.read() == b"12345"
    else:
        assert Path(source).read_bytes() == b"12345"
