"""Per-IP quota on minting download URLs: a token bucket that holds a day's quota and refills
over the day.

Counted before a URL is minted (a batch counts its items); past the bucket, 429 with a
``Retry-After`` of the seconds until the refused amount is back. A bucket, not a calendar day:
a caller who spends the quota is not locked out until midnight UTC but gets URLs back at the
daily rate (one every ``86400 / quota`` seconds), and the most any day can see is twice the
quota (a full bucket plus a day's refill), as a fixed day straddling midnight also allowed.
The buckets are the rate limiter's (``tusserver.security.buckets``): Redis in distributed mode, so
every instance counts against the same number; idle buckets cost no memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from tusserver import errors
from tusserver.security.buckets import Buckets, LocalBuckets, Rate, RedisBuckets

DAY = 86400


class Quota(Protocol):
    async def charge(self, subject: str, amount: int = 1) -> None:
        """Count ``amount`` against ``subject``'s bucket; ``RateLimited`` past it."""
        ...


class BucketQuota:
    def __init__(
        self, buckets: Buckets, limit: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._buckets = buckets
        self._limit = limit
        self._rate = Rate(per_minute=limit * 60 / DAY, burst=limit) if limit > 0 else None
        self._clock = clock

    async def charge(self, subject: str, amount: int = 1) -> None:
        if self._rate is None:
            return
        wait = await self._buckets.take([subject], [self._rate], self._clock(), cost=amount)
        if wait is not None:
            raise errors.RateLimited(
                "the daily quota of download URLs is used up",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


class LocalQuota(BucketQuota):
    """One process. Bounded in subjects too: a flood of distinct addresses (one IPv6 client
    holds many /64s) evicts the least recently used bucket past ``max_subjects``."""

    def __init__(
        self, limit: int, *, clock: Callable[[], float] = time.time, max_subjects: int = 100_000
    ) -> None:
        self._local = LocalBuckets(max_keys=max_subjects)
        super().__init__(self._local, limit, clock=clock)

    def __len__(self) -> int:
        return len(self._local)


class RedisQuota(BucketQuota):
    def __init__(
        self, client: Any, limit: int, *, prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(RedisBuckets(client, prefix=f"{prefix}quota:"), limit, clock=clock)
