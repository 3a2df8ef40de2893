"""The state-store contract: every backend, driven only through ``StateStore``."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest

from tusserver.models import ConcatKind, UploadInfo
from tusserver.state.base import AlreadyExists, StateStore


def make_info(**fields: Any) -> UploadInfo:
    fields.setdefault("length", 100)
    return UploadInfo(id=uuid.uuid4().hex, **fields)


def full_info() -> UploadInfo:
    """An upload with every field set to something other than its default."""
    return make_info(
        length=1_000_000,
        offset=4096,
        metadata={"filename": "vidéo 🎬.mp4", "is_confidential": None, "empty": ""},
        metadata_raw="filename dmlkw6kg8J+OrC5tcDQ=,is_confidential,empty ",
        concat=ConcatKind.FINAL,
        partials=(uuid.uuid4().hex, uuid.uuid4().hex),
        concat_raw="final;/files/a /files/b",
        owner="user-42",
        created_at=1_700_000_000.123456,
        expires_at=1_700_086_400.5,
        finished_at=1_700_000_100.25,
        sha256="ab" * 32,
        storage={"key": "uploads/x", "multipart_id": "abc", "parts": [1, 2], "n": 3},
    )


def test_full_info_sets_every_field() -> None:
    # Guards the round-trip test below: a new UploadInfo field must be added to full_info.
    info = full_info()
    for f in dataclasses.fields(UploadInfo):
        default = f.default_factory() if callable(f.default_factory) else f.default
        assert getattr(info, f.name) != default, f"full_info() leaves {f.name} at its default"


async def test_round_trip_keeps_every_field(state: StateStore) -> None:
    info = full_info()
    await state.create(info)
    assert await state.get(info.id) == info


async def test_update_replaces_the_record(state: StateStore) -> None:
    info = full_info()
    await state.create(info)
    newer = info.replace(
        offset=8192, metadata={"filename": None}, storage={}, expires_at=None, owner=None
    )
    await state.update(newer)
    assert await state.get(info.id) == newer
    await state.update(newer.replace(offset=9000))
    got = await state.get(info.id)
    assert got is not None
    assert got.offset == 9000


async def test_create_twice_fails(state: StateStore) -> None:
    info = make_info()
    await state.create(info)
    with pytest.raises(AlreadyExists):
        await state.create(info.replace(offset=5))
    assert await state.get(info.id) == info  # the first record stays


async def test_get_missing_is_none(state: StateStore) -> None:
    assert await state.get(uuid.uuid4().hex) is None


async def test_delete(state: StateStore) -> None:
    info = make_info()
    await state.create(info)
    await state.delete(info.id)
    assert await state.get(info.id) is None
    await state.delete(info.id)  # missing is fine
    await state.create(info)  # the id is free again
    assert await state.get(info.id) == info


async def test_expired_yields_only_unfinished_uploads_past_their_expiry(
    state: StateStore,
) -> None:
    now = 1_000_000.0
    wanted = [
        make_info(length=100, offset=10, expires_at=now - 1),
        make_info(length=None, offset=10, expires_at=now - 1000),  # deferred length
        make_info(length=100, offset=0, expires_at=now - 0.001),
    ]
    unwanted = [
        make_info(length=100, offset=100, expires_at=now - 1),  # complete
        make_info(length=0, offset=0, expires_at=now - 1),  # empty upload: complete
        make_info(length=100, offset=10, expires_at=None),  # never expires
        make_info(length=100, offset=10, expires_at=now),  # not before now
        make_info(length=100, offset=10, expires_at=now + 1),
    ]
    for info in [*wanted, *unwanted]:
        await state.create(info)
    got = [info async for info in state.expired(now)]
    assert sorted(got, key=lambda i: i.id) == sorted(wanted, key=lambda i: i.id)


async def test_expired_sees_updates_and_deletes(state: StateStore) -> None:
    now = 500.0
    info = make_info(length=100, offset=10, expires_at=now + 10)
    await state.create(info)
    assert [i async for i in state.expired(now)] == []
    await state.update(info.replace(expires_at=now - 10))
    assert [i.id async for i in state.expired(now)] == [info.id]
    await state.delete(info.id)
    assert [i async for i in state.expired(now)] == []


async def test_waiters(state: StateStore) -> None:
    partial = make_info(concat=ConcatKind.PARTIAL)
    await state.create(partial)
    assert await state.waiters(partial.id) == []
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await state.add_waiter(partial.id, first)
    await state.add_waiter(partial.id, second)
    await state.add_waiter(partial.id, first)  # registering twice is harmless
    assert sorted(await state.waiters(partial.id)) == sorted([first, second])
    assert await state.waiters(uuid.uuid4().hex) == []


async def test_waiters_survive_record_updates(state: StateStore) -> None:
    # A final registers while the partial's PATCH keeps rewriting the partial's record.
    partial = make_info(length=1000, concat=ConcatKind.PARTIAL)
    await state.create(partial)
    finals = [uuid.uuid4().hex for _ in range(20)]

    async def patch() -> None:
        for offset in range(0, 1000, 50):
            await state.update(partial.replace(offset=offset))

    await asyncio.gather(patch(), *(state.add_waiter(partial.id, f) for f in finals))
    assert sorted(await state.waiters(partial.id)) == sorted(finals)
    got = await state.get(partial.id)
    assert got is not None
    assert got.offset == 950


async def test_delete_forgets_the_waiters(state: StateStore) -> None:
    partial = make_info(concat=ConcatKind.PARTIAL)
    await state.create(partial)
    await state.add_waiter(partial.id, uuid.uuid4().hex)
    await state.delete(partial.id)
    assert await state.waiters(partial.id) == []
