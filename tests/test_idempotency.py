"""Idempotency-Key on the tus POST and on init, with records in this process and in Redis:
a repeat replays the first answer and creates nothing, a different request with the same key
is 422, and concurrent duplicates create exactly one upload."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import (
    API,
    FILES,
    OFFSET_OCTET,
    SECRET,
    bearer,
    created_count,
    guard_options,  # noqa: F401  (fixture)
    init,
    init_body,
    metadata,
)
from tests.apphttp import serving
from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tusserver import errors
from tusserver.runtime import runtime_of
from tusserver.security.idempotency import (
    Idempotency,
    IdempotencyStore,
    LocalIdempotencyStore,
    RedisIdempotencyStore,
    StoredResponse,
    fingerprint,
    parse_key,
)
from tusserver.security.idempotency_files import FileIdempotencyStore
from tusserver.settings import Settings


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Status, body and every header but the per-request ones and the replay marker."""
    per_request = {"x-request-id", "idempotent-replayed", "date"}
    assert second.status_code == first.status_code
    assert second.content == first.content
    assert [(k, v) for k, v in first.headers.multi_items() if k not in per_request] == [
        (k, v) for k, v in second.headers.multi_items() if k not in per_request
    ]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"


def tus_headers(key: str, length: int = 10, **extra: str) -> dict[str, str]:
    return {
        "Upload-Length": str(length),
        "Upload-Metadata": metadata(filename="a.bin"),
        "Idempotency-Key": key,
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000.0)


@pytest.fixture
async def http(guard_options: dict[str, Any], clock: Clock) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    async with serving(Settings(**guard_options), clock=clock) as client:
        yield client


# ---- the tus POST ---------------------------------------------------------------------------


async def test_a_repeated_tus_creation_replays_the_first_answer(http: httpx.AsyncClient) -> None:
    first = await http.post(FILES, headers=tus_headers("key-1"))
    assert first.status_code == 201
    second = await http.post(FILES, headers=tus_headers("key-1"))
    same_answer(first, second)
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["tus-resumable"] == "1.0.0"
    assert await created_count(http) == 1
    # /files and /files/ are one endpoint; another key is another upload.
    third = await http.post(FILES.rstrip("/"), headers=tus_headers("key-1"))
    assert third.headers["location"] == first.headers["location"]
    other = await http.post(FILES, headers=tus_headers("key-2"))
    assert other.headers["location"] != first.headers["location"]
    assert await created_count(http) == 2


async def test_a_replayed_creation_with_upload_stores_its_body_once(
    http: httpx.AsyncClient,
) -> None:
    headers = tus_headers("with-body", length=10, **{"Content-Type": OFFSET_OCTET})
    first = await http.post(FILES, headers=headers, content=b"hello")
    assert (first.status_code, first.headers["upload-offset"]) == (201, "5")
    second = await http.post(FILES, headers=headers, content=b"hello")
    same_answer(first, second)
    head = await http.head(first.headers["location"])
    assert head.headers["upload-offset"] == "5"  # not 10: the repeat was not appended
    assert (await http.get(first.headers["location"])).status_code == 409  # still unfinished
    assert await created_count(http) == 1


async def test_the_same_key_for_another_tus_request_is_422(http: httpx.AsyncClient) -> None:
    assert (await http.post(FILES, headers=tus_headers("k", length=10))).status_code == 201
    for changed in (
        tus_headers("k", length=11),
        tus_headers("k", **{"Upload-Metadata": metadata(filename="b.bin")}),
        tus_headers("k", **{"Upload-Concat": "partial"}),
    ):
        reused = await http.post(FILES, headers=changed)
        assert reused.status_code == 422
        assert reused.text.startswith("ERR_IDEMPOTENCY_KEY_REUSED: ")
    assert await created_count(http) == 1


async def test_failures_are_not_kept_so_the_key_can_be_retried(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, max_size=10)) as http:
        too_big = await http.post(FILES, headers=tus_headers("retry", length=11))
        assert too_big.status_code == 413
        again = await http.post(FILES, headers=tus_headers("retry", length=11))
        assert again.status_code == 413
        assert "idempotent-replayed" not in again.headers


@pytest.mark.parametrize(
    "key",
    ["", " ", "x" * 256, "caf\xe9", "tab\there"],
    ids=["empty", "blank", "long", "latin1", "tab"],
)
async def test_malformed_keys_are_400(http: httpx.AsyncClient, key: str) -> None:
    raw = {"Idempotency-Key": key.encode("latin-1")}
    tus = await http.post(FILES, headers={"Upload-Length": "1", **raw})
    assert tus.status_code == 400
    assert tus.text.startswith("ERR_INVALID_IDEMPOTENCY_KEY: ")
    api = await http.post(f"{API}/init", json=init_body(1), headers=raw)
    assert api.status_code == 400
    assert api.json()["error"]["code"] == "ERR_INVALID_IDEMPOTENCY_KEY"
    assert await created_count(http) == 0


async def test_concurrent_duplicates_create_exactly_one_upload(http: httpx.AsyncClient) -> None:
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"ab"
        await release.wait()
        yield b"cd"

    headers = tus_headers("race", length=4, **{"Content-Type": OFFSET_OCTET})
    first = asyncio.create_task(http.post(FILES, headers=headers, content=slow_body()))
    # The first request has created its upload and is waiting for the rest of its body.
    for _ in range(500):
        if await created_count(http) == 1:
            break
        await asyncio.sleep(0.01)
    duplicates = await asyncio.gather(
        *(http.post(FILES, headers=headers, content=b"abcd") for _ in range(5))
    )
    for duplicate in duplicates:
        assert duplicate.status_code == 409
        assert duplicate.text.startswith("ERR_IDEMPOTENCY_IN_PROGRESS: ")
        assert duplicate.headers["retry-after"] == "1"
    # A different request with the key is told so even while the first runs.
    other = await http.post(FILES, headers=tus_headers("race", length=5))
    assert other.status_code == 422
    release.set()
    done = await first
    assert (done.status_code, done.headers["upload-offset"]) == (201, "4")
    replay = await http.post(FILES, headers=headers, content=b"abcd")
    assert replay.headers["location"] == done.headers["location"]
    assert await created_count(http) == 1


async def test_keys_expire_after_the_ttl(http: httpx.AsyncClient, clock: Clock) -> None:
    first = await http.post(FILES, headers=tus_headers("ttl"))
    clock.now += 599
    assert (await http.post(FILES, headers=tus_headers("ttl"))).headers["location"] == (
        first.headers["location"]
    )
    store = runtime_of(http.app).idempotency.store  # type: ignore[attr-defined]
    if isinstance(store, RedisIdempotencyStore):
        return  # Redis expires keys on its own clock; the store tests cover it
    clock.now += 2
    fresh = await http.post(FILES, headers=tus_headers("ttl"))
    assert fresh.headers["location"] != first.headers["location"]


# ---- init -----------------------------------------------------------------------------------


async def test_a_repeated_init_replays_the_first_answer(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "init-1"}
    first = await init(http, 100, headers=key)
    assert first.status_code == 201
    # The same JSON spelled differently is the same request.
    second = await http.post(
        f"{API}/init",
        content=b'{"content_type": "video/mp4", "file_size": 100,  "filename": "clip.mp4"}',
        headers={**key, "Content-Type": "application/json"},
    )
    same_answer(first, second)
    assert second.json()["upload_id"] == first.json()["upload_id"]
    assert await created_count(http) == 1
    reused = await init(http, 101, headers=key)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "ERR_IDEMPOTENCY_KEY_REUSED"
    # Without a key every init creates.
    assert (await init(http, 100)).json()["upload_id"] != first.json()["upload_id"]
    assert await created_count(http) == 2


async def test_keys_belong_to_their_user(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, jwt_secret=SECRET)) as http:
        alice = {**bearer("alice"), "Idempotency-Key": "shared"}
        bob = {**bearer("bob"), "Idempotency-Key": "shared"}
        mine = await init(http, 10, headers=alice)
        theirs = await init(http, 10, headers=bob)
        assert theirs.status_code == 201
        assert theirs.json()["upload_id"] != mine.json()["upload_id"]
        tus_mine = await http.post(FILES, headers={**tus_headers("t"), **bearer("alice")})
        tus_theirs = await http.post(FILES, headers={**tus_headers("t"), **bearer("bob")})
        assert tus_mine.headers["location"] != tus_theirs.headers["location"]
        # Bob's replay would have handed him Alice's upload URL: it did not, and cannot.
        again = await init(http, 10, headers=bob)
        assert again.json()["upload_id"] == theirs.json()["upload_id"]


# ---- the rule itself, on both stores ---------------------------------------------------------


@pytest.fixture(params=["local", "files", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IdempotencyStore]:
    if request.param == "local":
        yield LocalIdempotencyStore()
        return
    if request.param == "files":  # the workers of `serve --workers N`
        yield FileIdempotencyStore(tmp_path / "idempotency")
        return
    from redis.asyncio import Redis

    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisIdempotencyStore(client, prefix=f"t-{uuid.uuid4().hex}:")
    finally:
        await client.aclose()


def answer(status: int = 201, body: bytes = b"made") -> Callable[[], Any]:
    calls: list[int] = []

    async def produce() -> StoredResponse:
        calls.append(1)
        return StoredResponse(status, (("location", f"/x/{len(calls)}"),), body)

    produce.calls = calls  # type: ignore[attr-defined]
    return produce


async def test_run_replays_rejects_and_releases(store: IdempotencyStore) -> None:
    rule = Idempotency(store, ttl=600)
    made = answer()
    first = await rule.run("k", "alice", "fp", made)
    assert first == StoredResponse(201, (("location", "/x/1"),), b"made")
    replay = await rule.run("k", "alice", "fp", made)
    assert replay == dataclasses.replace(first, replayed=True)
    assert len(made.calls) == 1  # type: ignore[attr-defined]
    with pytest.raises(errors.IdempotencyKeyReused):
        await rule.run("k", "alice", "other", made)
    assert not (await rule.run("k", "bob", "fp", made)).replayed  # another user's key

    # Non-2xx answers and exceptions free the key.
    refused = answer(status=409)
    await rule.run("r", "alice", "fp", refused)
    await rule.run("r", "alice", "fp", refused)
    assert len(refused.calls) == 2  # type: ignore[attr-defined]

    async def boom() -> StoredResponse:
        raise RuntimeError("backend")

    with pytest.raises(RuntimeError):
        await rule.run("e", "alice", "fp", boom)
    assert not (await rule.run("e", "alice", "fp", answer())).replayed


async def test_run_refuses_a_duplicate_while_the_first_runs(store: IdempotencyStore) -> None:
    rule = Idempotency(store)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> StoredResponse:
        started.set()
        await release.wait()
        return StoredResponse(201, (), b"once")

    first = asyncio.create_task(rule.run("k", "alice", "fp", slow))
    await started.wait()
    with pytest.raises(errors.IdempotencyInProgress):
        await rule.run("k", "alice", "fp", answer())
    with pytest.raises(errors.IdempotencyKeyReused):
        await rule.run("k", "alice", "changed", answer())
    release.set()
    assert (await first).body == b"once"
    assert (await rule.run("k", "alice", "fp", answer())).body == b"once"


async def test_a_cancelled_request_frees_its_key(store: IdempotencyStore) -> None:
    rule = Idempotency(store)
    started = asyncio.Event()

    async def hangs() -> StoredResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(rule.run("k", "alice", "fp", hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (await rule.run("k", "alice", "fp", answer())).replayed


async def test_records_expire(store: IdempotencyStore) -> None:
    if isinstance(store, LocalIdempotencyStore | FileIdempotencyStore):
        clock = Clock(1_700_000_000.0)
        if isinstance(store, FileIdempotencyStore):
            store = FileIdempotencyStore(store._root, clock=clock)
        else:
            store = LocalIdempotencyStore(clock=clock)
        rule = Idempotency(store, ttl=10)
        await rule.run("k", "alice", "fp", answer())
        clock.now += 11
    else:
        rule = Idempotency(store, ttl=0.2)
        await rule.run("k", "alice", "fp", answer())
        await asyncio.sleep(0.3)
    assert not (await rule.run("k", "alice", "fp", answer())).replayed


async def test_workers_share_the_file_records(tmp_path: Path) -> None:
    """Two stores over one directory, as two workers: a retry on the other sees the first."""
    one = Idempotency(FileIdempotencyStore(tmp_path / "idem"))
    other = Idempotency(FileIdempotencyStore(tmp_path / "idem"))
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> StoredResponse:
        started.set()
        await release.wait()
        return StoredResponse(201, (("location", "/x/1"),), b"once")

    first = asyncio.create_task(one.run("k", "alice", "fp", slow))
    await started.wait()
    with pytest.raises(errors.IdempotencyInProgress):
        await other.run("k", "alice", "fp", answer())
    release.set()
    await first
    replay = await other.run("k", "alice", "fp", answer())
    assert replay.replayed
    assert replay.body == b"once"
    with pytest.raises(errors.IdempotencyKeyReused):
        await other.run("k", "alice", "changed", answer())


async def test_the_file_store_drops_expired_records(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    store = FileIdempotencyStore(tmp_path / "idem", clock=clock)
    rule = Idempotency(store, ttl=10)
    for n in range(3):
        await rule.run(f"k{n}", "alice", "fp", answer())
    assert len(list((tmp_path / "idem").glob("*.json"))) == 3
    clock.now += 11
    for n in range(256):  # every 256th claim purges
        await store.claim(f"{n:064x}", "fp", 1)
    left = {p.stem for p in (tmp_path / "idem").glob("*.json")}
    assert not left & {Idempotency.slot("alice", f"k{n}") for n in range(3)}
    assert len(left) == 256


def test_the_local_store_is_bounded() -> None:
    store = LocalIdempotencyStore(max_entries=3)
    for n in range(5):
        asyncio.run(store.claim(f"s{n}", "fp", 60))
    assert list(store._entries) == ["s2", "s3", "s4"]


def test_keys_and_fingerprints() -> None:
    assert parse_key("  abc-123 ") == "abc-123"
    assert parse_key("with inner space") == "with inner space"
    assert parse_key("x" * 255) == "x" * 255
    for bad in ("", "x" * 256, "é", "a\x00b"):
        with pytest.raises(errors.InvalidIdempotencyKey):
            parse_key(bad)
    assert fingerprint("POST", "/a", ["ab", "c"]) != fingerprint("POST", "/a", ["a", "bc"])
    assert fingerprint("POST", "/a", [None]) != fingerprint("POST", "/a", [""])
    assert fingerprint("post", "/a", [b"x"]) == fingerprint("POST", "/a", ["x"])


def test_the_local_store_is_bounded_in_bytes() -> None:
    # A multipart create's answer lists up to 1,000 part URLs: the count alone is no bound.
    store = LocalIdempotencyStore(max_bytes=12_000)
    big = StoredResponse(201, (("content-type", "application/json"),), b"x" * 3000)

    async def fill() -> None:
        for n in range(10):
            token, _ = await store.claim(f"s{n}", "fp", 60)
            assert token is not None
            await store.save(f"s{n}", token, "fp", big, 600)

    asyncio.run(fill())
    assert store.bytes <= 12_000
    assert list(store._entries) == ["s7", "s8", "s9"]


def test_the_local_store_drops_expired_records_without_being_asked_for_them() -> None:
    clock = Clock(1_700_000_000.0)
    store = LocalIdempotencyStore(clock=clock)
    for n in range(100):
        asyncio.run(store.claim(f"s{n}", "fp", 60))
    clock.now += 61
    asyncio.run(store.claim("new", "fp", 60))
    assert list(store._entries) == ["new"]
    assert store.bytes == store._entries["new"].size
