"""Backends under contract test, one factory per backend.

Adding a backend is one factory plus one name in ``STORE_BACKENDS`` / ``STATE_BACKENDS``
(an S3 factory would start moto in server mode; a Redis one would connect and flush a test
database). Each factory is an async context manager so it can set up and tear down servers,
buckets and connections.

Store factories should make the store checkpoint as often as it can (local: interval 0,
a small write buffer), so the progress tests see several checkpoints in a few MiB.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tusserver.state.base import StateStore
from tusserver.state.local import LocalStateStore
from tusserver.state.redis import RedisStateStore
from tusserver.storage.base import DataStore, StoreComposer
from tusserver.storage.local import LocalStore
from tusserver.storage.s3 import S3Config, S3Store

from ..services_redis import REDIS
from ..services_s3 import MOTO, s3_client

StoreFactory = Callable[[Path], contextlib.AbstractAsyncContextManager[DataStore]]
StateFactory = Callable[[Path], contextlib.AbstractAsyncContextManager[StateStore]]


@contextlib.asynccontextmanager
async def local_store(tmp_path: Path) -> AsyncIterator[DataStore]:
    # A 256 KiB buffer and no checkpoint interval: many batches and a checkpoint per batch.
    yield LocalStore(tmp_path / "store", write_buffer=256 * 1024, checkpoint_interval=0.0)


@contextlib.asynccontextmanager
async def s3_store(tmp_path: Path) -> AsyncIterator[DataStore]:
    # moto in server mode, a fresh bucket, 5 MiB parts (S3's minimum) and 2-part ListParts
    # pages: a few MiB of data already exercises several parts, tails and paging.
    async with s3_client(MOTO.ensure_started()) as client:
        bucket = f"contract-{uuid.uuid4().hex}"
        await client.create_bucket(Bucket=bucket)
        yield S3Store(
            client,
            S3Config(bucket=bucket, preferred_part_size=5 * 1024 * 1024, list_parts_page=2),
        )


@contextlib.asynccontextmanager
async def local_state(tmp_path: Path) -> AsyncIterator[StateStore]:
    yield LocalStateStore(tmp_path / "state")


@contextlib.asynccontextmanager
async def redis_state(tmp_path: Path) -> AsyncIterator[StateStore]:
    from redis.asyncio import Redis

    # A fresh key prefix per test instead of FLUSHDB: tests never see each other's keys.
    client = Redis.from_url(REDIS.ensure_started())
    try:
        yield RedisStateStore(client, prefix=f"t{uuid.uuid4().hex[:8]}:")
    finally:
        await client.aclose()


STORE_BACKENDS: dict[str, StoreFactory] = {"local": local_store, "s3": s3_store}
STATE_BACKENDS: dict[str, StateFactory] = {"local": local_state, "redis": redis_state}


@pytest.fixture(params=sorted(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreComposer]:
    """The backend as the server sees it: a composer of typed capabilities."""
    async with STORE_BACKENDS[request.param](tmp_path) as backend:
        yield StoreComposer.from_store(backend)


@pytest.fixture(params=sorted(STATE_BACKENDS))
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    async with STATE_BACKENDS[request.param](tmp_path) as backend:
        yield backend
