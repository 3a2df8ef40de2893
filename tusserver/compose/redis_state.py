"""The ``redis`` state backend: every shared table in one Redis all instances use
(``TUS_REDIS_URL``; keys under ``TUS_REDIS_PREFIX``)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from delivery.quota import Quota, RedisQuota
from delivery.tokens import OneTimeStore, RedisOneTimeStore
from tusserver.api.direct_state import DirectRecords, RedisDirectRecords
from tusserver.compose.shared import Clock, StartupError
from tusserver.ops.metrics import MetricsSink
from tusserver.security.buckets import Buckets, RedisBuckets
from tusserver.security.idempotency import IdempotencyStore, RedisIdempotencyStore
from tusserver.settings import Settings
from tusserver.state.base import Locker, StateStore
from tusserver.state.lease import Lease, RedisLease
from tusserver.state.outbox import CatalogOutbox, RedisCatalogOutbox

# Seconds a command waits for a free connection when all of the pool's are busy.
POOL_WAIT = 10.0


class RedisState:
    def __init__(self, client: Any, locker: Locker, *, prefix: str) -> None:
        self.client = client
        self._locker = locker
        self._prefix = prefix

    @classmethod
    async def open(
        cls, settings: Settings, stack: AsyncExitStack, metrics: MetricsSink
    ) -> RedisState:
        """Connect and check that Redis answers; closing ``stack`` closes the client."""
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.exceptions import RedisError

        from tusserver.state.redis import RedisLocker

        pool = BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(),
            max_connections=settings.redis_max_connections,
            timeout=POOL_WAIT,
        )
        client = Redis.from_pool(pool)  # the client owns the pool: aclose closes both
        stack.push_async_callback(client.aclose)
        try:
            await asyncio.wait_for(client.ping(), 10)
        except (RedisError, OSError, TimeoutError) as exc:
            # Never echo the URL: it may hold a password.
            raise StartupError(
                f"Redis is unreachable (TUS_REDIS_URL): {type(exc).__name__}"
            ) from None
        prefix = settings.redis_prefix
        locker = RedisLocker(client, prefix=prefix, ttl=settings.lock_ttl, metrics=metrics)
        stack.push_async_callback(locker.close)
        return cls(client, locker, prefix=prefix)

    def state(self) -> StateStore:
        from tusserver.state.redis import RedisStateStore

        return RedisStateStore(self.client, prefix=self._prefix)

    def locker(self) -> Locker:
        return self._locker

    def lease(self) -> Lease:
        return RedisLease(self.client, f"{self._prefix}sweeper")

    def outbox(self) -> CatalogOutbox:
        return RedisCatalogOutbox(self.client, prefix=self._prefix)

    def idempotency(self, clock: Clock) -> IdempotencyStore:
        return RedisIdempotencyStore(self.client, prefix=f"{self._prefix}idem:")

    def rate_buckets(self) -> Buckets:
        return RedisBuckets(self.client, prefix=f"{self._prefix}rl:")

    def onetime_tokens(self, clock: Clock) -> OneTimeStore:
        return RedisOneTimeStore(self.client, prefix=self._prefix, clock=clock)

    def quota(self, per_day: int, clock: Clock) -> Quota:
        return RedisQuota(self.client, per_day, prefix=self._prefix, clock=clock)

    def direct_records(self, clock: Clock) -> DirectRecords:
        return RedisDirectRecords(self.client, prefix=self._prefix, clock=clock)
