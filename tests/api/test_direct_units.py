"""The pieces of direct uploads on their own: the record stores (one contract, on local disk
and on a real Redis), part tokens, multipart planning and part-list checks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from delivery.signing import UrlSigner
from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tusserver import errors
from tusserver.api.direct_backend import CompletedPart, bare_etag, check_part_list, plan_multipart
from tusserver.api.direct_state import (
    KEEP_AFTER_EXPIRY,
    DirectRecords,
    DirectStatus,
    DirectUpload,
    LocalDirectRecords,
    RedisDirectRecords,
)
from tusserver.api.part_tokens import PURPOSE, PartClaim, PartSigner

MiB = 1024 * 1024
NOW = 1_800_000_000.0
K1, K2 = b"1" * 32, b"2" * 32


def upload(**changes: object) -> DirectUpload:
    base = DirectUpload(
        id=uuid.uuid4().hex,
        kind="multipart",
        owner="alice",
        filename="a.mp4",
        content_type="video/mp4",
        size=12 * MiB,
        status=DirectStatus.PENDING,
        created_at=NOW,
        expires_at=NOW + 100,
        part_size=5 * MiB,
        num_parts=3,
    )
    return base.replace(**changes)


@pytest.fixture(params=["local", "redis"])
async def records(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[DirectRecords, Clock, Redis | None]]:
    clock = Clock(NOW)
    if request.param == "local":
        yield LocalDirectRecords(tmp_path / "records"), clock, None
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        prefix = f"u-{uuid.uuid4().hex[:8]}:"
        yield RedisDirectRecords(client, prefix=prefix, clock=clock), clock, client
    finally:
        await client.aclose()


async def test_records_round_trip(records: tuple[DirectRecords, Clock, Redis | None]) -> None:
    store, _, _ = records
    item = upload(key_prefix="a/b", multipart_id="mp-1")
    await store.create(item)
    assert await store.get(item.id) == item
    with pytest.raises(FileExistsError):
        await store.create(item)
    changed = item.replace(status=DirectStatus.UPLOADING)
    await store.put(changed)
    assert await store.get(item.id) == changed
    await store.delete(item.id)
    assert await store.get(item.id) is None
    await store.delete(item.id)  # missing is fine
    assert await store.get(uuid.uuid4().hex) is None
    with pytest.raises(ValueError, match="invalid upload id"):
        await store.get("../etc/passwd")


async def test_records_list_expired_active_uploads_only(
    records: tuple[DirectRecords, Clock, Redis | None],
) -> None:
    store, _, _ = records
    stale = upload(expires_at=NOW - 1)
    fresh = upload(expires_at=NOW + 1)
    done = upload(expires_at=NOW - 1, status=DirectStatus.COMPLETED)
    for item in (stale, fresh, done):
        await store.create(item)
    assert [u.id async for u in store.expired(NOW)] == [stale.id]
    await store.put(stale.replace(status=DirectStatus.ABORTED))
    assert [u.id async for u in store.expired(NOW)] == []


async def test_records_are_kept_a_while_after_expiry(
    records: tuple[DirectRecords, Clock, Redis | None],
) -> None:
    store, _, client = records
    item = upload(status=DirectStatus.COMPLETED)
    await store.create(item)
    if client is not None:
        ttl = await client.ttl(f"{store._prefix}{item.id}")  # type: ignore[attr-defined]
        assert abs(ttl - (100 + KEEP_AFTER_EXPIRY)) <= 2
        return
    assert await store.prune(NOW + 100 + KEEP_AFTER_EXPIRY - 1) == 0
    assert await store.prune(NOW + 100 + KEEP_AFTER_EXPIRY + 1) == 1
    assert await store.get(item.id) is None


async def test_a_corrupt_local_record_reads_as_missing(tmp_path: Path) -> None:
    store = LocalDirectRecords(tmp_path)
    upload_id = uuid.uuid4().hex
    (tmp_path / f"{upload_id}.json").write_text("{not json")
    assert await store.get(upload_id) is None


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_verify_and_carry_their_claim() -> None:
    signer = PartSigner([K1])
    claim = PartClaim(uuid.uuid4().hex, 3, int(NOW) + 60)
    assert signer.verify(signer.sign(claim), now=NOW) == claim
    single = PartClaim(uuid.uuid4().hex, 0, int(NOW) + 60, "text/plain")
    assert signer.verify(signer.sign(single), now=NOW) == single


def test_keys_rotate() -> None:
    claim = PartClaim(uuid.uuid4().hex, 1, int(NOW) + 60)
    old = PartSigner([K1]).sign(claim)
    rotated = PartSigner([K2, K1])
    assert rotated.verify(old, now=NOW) == claim
    with pytest.raises(errors.SignatureInvalid):
        PartSigner([K2]).verify(old, now=NOW)


def test_expiry_is_checked_after_the_signature() -> None:
    signer = PartSigner([K1])
    token = signer.sign(PartClaim(uuid.uuid4().hex, 1, int(NOW) + 60))
    with pytest.raises(errors.UrlExpired):
        signer.verify(token, now=NOW + 60)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    with pytest.raises(errors.SignatureInvalid):
        signer.verify(forged, now=NOW + 60)


def test_tokens_of_another_purpose_never_verify() -> None:
    download = UrlSigner("download v1", [K1]).sign(
        {"u": uuid.uuid4().hex, "n": 1}, expires_at=2**40
    )
    with pytest.raises(errors.SignatureInvalid):
        PartSigner([K1]).verify(download, now=NOW)
    # Signed with our purpose but claims that are not a part: refused too.
    odd = UrlSigner(PURPOSE, [K1]).sign({"u": "../x", "n": 1}, expires_at=2**40)
    with pytest.raises(errors.SignatureInvalid):
        PartSigner([K1]).verify(odd, now=NOW)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PartSigner([b"short"])


# -- planning and part lists -------------------------------------------------------------------


def test_plan_honours_a_valid_request_and_otherwise_the_preference() -> None:
    assert (
        plan_multipart(16 * MiB, requested=5 * MiB, preferred=16 * MiB, fixed=None).num_parts == 4
    )
    plan = plan_multipart(100 * MiB, requested=None, preferred=16 * MiB, fixed=None)
    assert (plan.part_size, plan.num_parts) == (16 * MiB, 7)
    fixed = plan_multipart(100 * MiB, requested=5 * MiB, preferred=16 * MiB, fixed=8 * MiB)
    assert fixed.part_size == 8 * MiB
    huge = plan_multipart(10 * 1024**4 // 2, requested=None, preferred=5 * MiB, fixed=None)
    assert huge.num_parts <= 10_000
    for size, requested in ((0, None), (10, 5 * MiB - 1), (10_001 * 5 * MiB, 5 * MiB)):
        with pytest.raises(ValueError, match=r"file_size|part_size"):
            plan_multipart(size, requested=requested, preferred=16 * MiB, fixed=None)


def test_part_lists_must_be_exactly_one_to_n() -> None:
    good = [CompletedPart(n, f'"{n:032x}"') for n in (1, 2, 3)]
    assert check_part_list(good, 3) == []
    assert check_part_list(good[:2], 3) == ["missing parts: 3"]
    assert "listed twice" in " ".join(check_part_list([*good, good[2]], 3))
    assert "out of order" in " ".join(check_part_list([good[1], good[0], good[2]], 3))
    assert "not in 1..3" in " ".join(check_part_list([*good, CompletedPart(4, "x")], 3))
    assert "etag" in " ".join(check_part_list([good[0], good[1], CompletedPart(3, '""')], 3))
    many = check_part_list([], 30)
    assert many == ["missing parts: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 20 more"]


def test_bare_etags_compare_without_quotes_or_weakness() -> None:
    assert bare_etag('"ABC"') == bare_etag("abc") == bare_etag('W/"abc"') == "abc"


def test_expected_part_sizes() -> None:
    item = upload()
    assert [item.expected_part_size(n) for n in (1, 2, 3)] == [5 * MiB, 5 * MiB, 2 * MiB]
    assert upload(kind="single", part_size=None).expected_part_size(0) is None
