"""Per-IP daily quota on minting download URLs: a fixed window per UTC day.

Counted before a URL is minted; the first request past the limit gets 429 with a
``Retry-After`` of the seconds left in the day. Redis (``INCR`` + ``EXPIREAT`` in one
pipeline) in distributed mode, so every instance counts against the same number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from tusserver import errors

DAY = 86400


class Quota(Protocol):
    async def charge(self, subject: str, amount: int = 1) -> None:
        """Count ``amount`` against ``subject``'s day; ``RateLimited`` past the limit."""
        ...


def _window(now: float) -> tuple[int, int]:
    day = int(now // DAY)
    return day, (day + 1) * DAY


def _refuse(now: float, reset: int) -> errors.RateLimited:
    retry = max(1, int(reset - now))
    return errors.RateLimited(
        "the daily quota of download URLs is used up", headers={"Retry-After": str(retry)}
    )


class LocalQuota:
    """One process: a count per subject (client IP) for the current day.

    Bounded in subjects too: a day's distinct addresses have no limit of their own (an IPv6
    client holds many /64s), and a dict of them all would only shrink at midnight. Past
    ``max_subjects`` the subject counted first today is forgotten and starts again from
    zero: only a flood of distinct addresses can cause that, and the cost is a few extra URLs
    for one of them, not memory without end.
    """

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.time,
        max_subjects: int = 100_000,
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._max = max_subjects
        self._day = -1
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    async def charge(self, subject: str, amount: int = 1) -> None:
        if self._limit <= 0:
            return
        now = self._clock()
        day, reset = _window(now)
        if day != self._day:
            # A new day: every counter starts again (and memory never grows past one day).
            self._day, self._counts = day, {}
        used = self._counts.get(subject, 0) + amount
        if used > self._limit:
            raise _refuse(now, reset)
        self._counts[subject] = used
        while len(self._counts) > self._max:
            del self._counts[next(iter(self._counts))]


class RedisQuota:
    def __init__(
        self, client: Any, limit: int, *, prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._limit = limit
        self._prefix = f"{prefix}quota:"
        self._clock = clock

    async def charge(self, subject: str, amount: int = 1) -> None:
        if self._limit <= 0:
            return
        now = self._clock()
        day, reset = _window(now)
        key = f"{self._prefix}{day}:{subject}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expireat(key, reset + 60)
            used, _ = await pipe.execute()
        if int(used) > self._limit:
            raise _refuse(now, reset)
