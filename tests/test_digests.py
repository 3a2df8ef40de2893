"""The running SHA-256 kept while bytes stream in (tusserver.core.digests)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tusserver.core import digests as digests_module
from tusserver.core.digests import EMPTY_SHA256, HEAD_BYTES, ContentDigests
from tusserver.runtime import runtime_of

MiB = 1024 * 1024


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos : pos + size]


async def consume(digests: ContentDigests, upload_id: str, offset: int, data: bytes) -> None:
    feed = digests.start(upload_id, offset)
    assert feed is not None
    stored = 0
    async for chunk in feed.wrap(chunks_of(data)):
        stored += len(chunk)
    await digests.commit(upload_id, feed, stored)


async def test_many_writes_across_thread_batches_give_the_whole_file_digest() -> None:
    data = os.urandom(5 * MiB + 12345)
    digests = ContentDigests()
    cut1, cut2 = 3 * MiB + 7, 4 * MiB + 99
    await consume(digests, "u", 0, data[:cut1])
    await consume(digests, "u", cut1, data[cut1:cut2])
    await consume(digests, "u", cut2, data[cut2:])
    assert digests.finish("u", len(data)) == hashlib.sha256(data).hexdigest()
    assert digests.finish("u", len(data)) is None  # taken


async def test_a_store_that_stops_reading_early_keeps_only_what_it_stored() -> None:
    data = os.urandom(3 * MiB)
    digests = ContentDigests()
    feed = digests.start("u", 0)
    assert feed is not None
    stored = 0
    async for chunk in feed.wrap(chunks_of(data)):
        stored += len(chunk)
        if stored >= 2 * MiB:
            break  # the body ended early; everything handed out was stored
    await digests.commit("u", feed, stored)
    await consume(digests, "u", stored, data[stored:])
    assert digests.finish("u", len(data)) == hashlib.sha256(data).hexdigest()


async def test_a_hash_that_saw_bytes_the_store_did_not_keep_is_dropped() -> None:
    digests = ContentDigests()
    feed = digests.start("u", 0)
    assert feed is not None
    async for _ in feed.wrap(chunks_of(b"x" * 1000)):
        pass
    await digests.commit("u", feed, 600)  # the store kept less than it was handed
    assert digests.start("u", 600) is None
    assert digests.finish("u", 1000) is None


async def test_a_write_at_an_unknown_offset_cannot_continue_the_hash() -> None:
    digests = ContentDigests()
    await consume(digests, "u", 0, b"a" * 100)
    assert digests.start("u", 50) is None  # an offset the hash has not seen
    # start() took the entry out: a later write at 100 cannot pick it up either.
    assert digests.start("u", 100) is None


async def test_entries_are_bounded() -> None:
    digests = ContentDigests(max_entries=2)
    for name in ("a", "b", "c"):
        await consume(digests, name, 0, b"z")
    assert digests.finish("a", 1) is None  # evicted, oldest first
    assert digests.finish("c", 1) == hashlib.sha256(b"z").hexdigest()


def test_an_empty_upload_has_the_empty_digest() -> None:
    assert ContentDigests().finish("never-written", 0) == EMPTY_SHA256


async def test_the_head_is_kept_for_the_catalog_across_small_writes() -> None:
    # Writes of 3000 bytes: the first HEAD_BYTES are gathered across three of them.
    data = os.urandom(20_000)
    digests = ContentDigests()
    for start in range(0, len(data), 3000):
        await consume(digests, "u", start, data[start : start + 3000])
    assert digests.take_head("u") is None  # only once the upload is finished
    assert digests.finish("u", len(data)) is not None
    assert digests.take_head("u") == data[:HEAD_BYTES]
    assert digests.take_head("u") is None  # taken


async def test_no_head_for_an_upload_not_seen_whole() -> None:
    data = os.urandom(10_000)
    digests = ContentDigests()
    await consume(digests, "u", 0, data[:4000])
    digests.discard("u")  # say another instance took a PATCH
    assert digests.start("u", 4000) is None
    assert digests.finish("u", len(data)) is None
    assert digests.take_head("u") is None


async def test_a_short_upload_has_a_short_head() -> None:
    digests = ContentDigests()
    await consume(digests, "u", 0, b"%PDF-1.7 tiny")
    assert digests.finish("u", 13) is not None
    assert digests.take_head("u") == b"%PDF-1.7 tiny"


def test_the_catalog_sniffs_no_more_than_the_head_holds() -> None:
    from catalog.sniff import SNIFF_BYTES

    assert SNIFF_BYTES <= HEAD_BYTES


async def test_batches_shrink_as_more_uploads_hash_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each feed holds up to two batches: a lone upload hashes 1 MiB per thread hop, 100 at
    # once about 32 MiB / 100 each, so their memory stays near a fixed budget.
    batches: list[int] = []
    real = digests_module._update

    def spy(hasher: Any, chunks: list[bytes]) -> None:
        batches.append(sum(len(chunk) for chunk in chunks))
        real(hasher, chunks)

    monkeypatch.setattr(digests_module, "_update", spy)
    digests = ContentDigests()

    async def upload(name: str, data: bytes) -> None:
        feed = digests.start(name, 0)
        assert feed is not None
        stored = 0
        async for chunk in feed.wrap(chunks_of(data)):
            stored += len(chunk)
            await asyncio.sleep(0)  # the uploads interleave, as on a busy server
        await digests.commit(name, feed, stored)
        assert digests.finish(name, len(data)) == hashlib.sha256(data).hexdigest()

    await upload("alone", os.urandom(5 * MiB))
    assert max(batches) == MiB
    batches.clear()
    many = [os.urandom(2 * MiB) for _ in range(100)]
    await asyncio.gather(*(upload(f"u{n}", data) for n, data in enumerate(many)))
    # The first uploads start while few others hash, so their first batches are larger.
    assert max(batches) <= MiB
    assert sorted(batches)[len(batches) // 2] <= 400 * 1024
    assert digests._budget.active == 0  # every feed let go of its share


async def test_a_terminated_upload_leaves_no_running_hash(tmp_path: Path) -> None:
    # Each running hash holds up to HEAD_BYTES of its upload; a client's DELETE must not
    # leave one behind until the LRU bound pushes it out.
    from tests.apphttp import serving
    from tusserver.settings import Settings

    async with serving(Settings(data_dir=tmp_path, metrics=False)) as http:
        digests = runtime_of(http.app).service.digests  # type: ignore[attr-defined]
        for _ in range(5):
            created = await http.post("http://testserver/files/", headers={"Upload-Length": "100"})
            url = created.headers["Location"]
            patch = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
            assert (await http.patch(url, headers=patch, content=b"x" * 40)).status_code == 204
            assert (await http.delete(url)).status_code == 204
        assert len(digests._running) == 0
