"""The local one-time token store on a real directory: exactly-once redemption (also across
threads and store instances), durability across a restart, expiry, and its bounds."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from delivery.tokens import LocalOneTimeStore, OneTimeGrant, new_token, token_hash
from tests.clocks import Clock


def grant(expires_at: int = 2_000_000_000, file_id: str = "f" * 32) -> OneTimeGrant:
    return OneTimeGrant(file_id=file_id, owner="alice", expires_at=expires_at)


async def test_a_grant_is_taken_once_and_only_its_hash_is_on_disk(tmp_path: Path) -> None:
    store = LocalOneTimeStore(tmp_path / "onetime")
    token = new_token()
    await store.put(token, grant())
    names = os.listdir(tmp_path / "onetime")
    assert names == [f"{token_hash(token)}.json"]
    assert token not in (tmp_path / "onetime" / names[0]).read_text()
    assert await store.take(token) == grant()
    assert await store.take(token) is None
    assert await store.take(new_token()) is None
    assert os.listdir(tmp_path / "onetime") == []


async def test_a_grant_survives_a_restart(tmp_path: Path) -> None:
    token = new_token()
    await LocalOneTimeStore(tmp_path).put(token, grant())
    again = LocalOneTimeStore(tmp_path)  # a new process would start with this
    assert await again.take(token) == grant()
    assert await LocalOneTimeStore(tmp_path).take(token) is None


async def test_concurrent_takes_from_two_stores_redeem_once(tmp_path: Path) -> None:
    # Two instances stand for two processes on one directory (the server and a sweep);
    # every take runs in its own worker thread.
    one, two = LocalOneTimeStore(tmp_path), LocalOneTimeStore(tmp_path)
    for _ in range(20):
        token = new_token()
        await one.put(token, grant())
        found = await asyncio.gather(*(s.take(token) for s in [one, two] * 8))
        assert sum(g is not None for g in found) == 1


async def test_expired_grants_are_refused_and_dropped(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalOneTimeStore(tmp_path, clock=clock)
    soon, later = new_token(), new_token()
    await store.put(soon, grant(expires_at=int(clock.now) + 60))
    await store.put(later, grant(expires_at=int(clock.now) + 600))
    # A crash mid-write leaves a temporary file: old ones go with the expired grants.
    stale = tmp_path / f".{token_hash(new_token())}.json.0123456789abcdef.tmp"
    stale.write_bytes(b"{")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / f".{token_hash(new_token())}.json.fedcba9876543210.tmp"
    fresh.write_bytes(b"{")
    (tmp_path / f"{token_hash(new_token())}.json").write_bytes(b"not json")
    clock.now += 61
    assert await store.drop_expired() == 2  # the expired grant and the unreadable one
    assert not stale.exists()
    assert fresh.exists()  # may belong to a write in progress
    assert await store.take(soon) is None
    assert await store.take(later) is not None


async def test_expired_but_not_yet_swept_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalOneTimeStore(tmp_path, clock=clock)
    token = new_token()
    await store.put(token, grant(expires_at=int(clock.now) + 60))
    clock.now += 60
    assert await store.take(token) is None


async def test_the_store_is_bounded_oldest_first(tmp_path: Path) -> None:
    store = LocalOneTimeStore(tmp_path, max_entries=3)
    tokens = [new_token() for _ in range(5)]
    for n, token in enumerate(tokens):
        await store.put(token, grant())
        path = tmp_path / f"{token_hash(token)}.json"
        os.utime(path, (1_000_000 + n, 1_000_000 + n))  # distinct ages whatever the clock
    assert len(os.listdir(tmp_path)) == 3
    assert [await store.take(t) is not None for t in tokens] == [False, False, True, True, True]
