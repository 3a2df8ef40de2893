"""Request guards whose state must be shared by every instance: idempotency records and
rate-limit buckets. In-process from the start; bound to Redis when the app's backends open
in distributed mode (``bind``), so every instance answers a repeated key or counts a caller
the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tusserver.idempotency import Idempotency, LocalIdempotencyStore, RedisIdempotencyStore
from tusserver.ratelimit import LocalBuckets, RateLimiter, RedisBuckets
from tusserver.settings import Settings


class Guards:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._prefix = settings.redis_prefix
        self.idempotency = Idempotency(
            LocalIdempotencyStore(clock=clock), ttl=settings.idempotency_ttl
        )
        self.limiter = RateLimiter(LocalBuckets(), clock=clock)

    def bind(self, redis: Any | None) -> None:
        """Use the shared Redis client (``Components.redis``), if there is one."""
        if redis is None:
            return
        self.idempotency.store = RedisIdempotencyStore(redis, prefix=f"{self._prefix}idem:")
        self.limiter.buckets = RedisBuckets(redis, prefix=f"{self._prefix}rl:")
