"""Token buckets (GCRA): how many requests a caller may make now, in process or in Redis.

Owns the algorithm the rate limits (``tusserver.security.ratelimit``) and delivery's download quota
(``delivery.quota``) share; it knows nothing of HTTP. A bucket per key holds up to ``burst``
requests and refills at the sustained rate. It is kept as one number, the bucket's
"theoretical arrival time": each admitted request pushes it ``60 / rate`` seconds on, and a
request is refused when that would put it more than ``burst`` intervals ahead of now. A
refused request takes nothing, so a client that waits as told gets through. A bucket that has
refilled is the same as no bucket, so it is dropped (Redis: its key expires shortly after; in
process: least recently used buckets are dropped as they refill, and past ``max_keys`` the
least recently used one goes regardless).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A request this many seconds early is on time: float sums of intervals such as 60 / 7 must
# not refuse a client that waited exactly as Retry-After told it.
SLACK = 1e-6


@dataclass(frozen=True)
class Rate:
    """A sustained rate (requests per minute, > 0) and the burst a full bucket admits at once."""

    per_minute: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds one request's token takes to come back."""
        return 60.0 / self.per_minute

    @property
    def tolerance(self) -> float:
        """How far ahead of now a bucket's arrival time may run: ``burst`` intervals."""
        return max(1, self.burst) * self.interval


class Buckets(Protocol):
    async def take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, *, cost: int = 1
    ) -> float | None:
        """Take ``cost`` tokens from every key's bucket, all or none: None when admitted,
        else the seconds until every one of them would admit it (nothing is taken then)."""
        ...


def _advance(tat: float | None, rate: Rate, now: float, cost: int) -> tuple[float, float]:
    """The bucket's next arrival time if it admits ``cost`` requests now, and how many
    seconds too early they are (<= 0: admitted)."""
    new = max(tat if tat is not None else now, now) + rate.interval * cost
    return new, new - now - rate.tolerance


class LocalBuckets:
    """One process: each key's arrival time, least recently used first (dict order)."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        # Ordered, not a plain dict: popping the oldest entry and moving one to the end are
        # O(1) here, where a dict would rescan the holes its front deletions leave.
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys

    def __len__(self) -> int:
        return len(self._tat)

    async def take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, *, cost: int = 1
    ) -> float | None:
        advanced = [
            _advance(self._tat.get(k), r, now, cost) for k, r in zip(keys, rates, strict=True)
        ]
        wait = max(early for _, early in advanced)
        if wait > SLACK:
            return wait
        for key, (tat, _) in zip(keys, advanced, strict=True):
            self._tat[key] = tat
            self._tat.move_to_end(key)  # the most recently used last
        self._evict(now)
        return None

    def _evict(self, now: float) -> None:
        # The least recently used buckets come first; those that have refilled are the same
        # as absent ones, so dropping them loses nothing. Stop at the first one still
        # draining (amortised O(1) per request); past the cap drop it anyway.
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now and len(self._tat) <= self._max:
                break
            del self._tat[key]


# A bucket's key outlives its refill by this much. ``now`` is the caller's clock while Redis
# expires keys by its own: with no grace, a caller whose clock runs behind Redis's (another
# host, or a pause between two requests of a burst) would see a half-drained bucket vanish and
# be handed a full one. A stale key past its refill reads as full anyway, so the grace costs
# only memory, for a few seconds.
EXPIRY_GRACE_MS = 10_000

# KEYS: the buckets; ARGV: now (ms), then per key its interval (times the cost) and tolerance,
# then the slack (ms). Every bucket admits the request or none is touched. A bucket's key
# expires EXPIRY_GRACE_MS after it has refilled, so idle callers cost Redis nothing. Times are
# ms as doubles, written back with 17 digits (exact).
_TAKE = """
local now = tonumber(ARGV[1])
local slack = tonumber(ARGV[#ARGV])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[2 * i])
  tats[i] = tat
  local early = tat - now - tonumber(ARGV[2 * i + 1])
  if early > wait then wait = early end
end
if wait > slack then return string.format('%.17g', wait) end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.17g', tats[i]), 'PX', math.ceil(tats[i] - now) + GRACE)
end
return '0'
""".replace("GRACE", str(EXPIRY_GRACE_MS))


class RedisBuckets:
    """Distributed mode: every instance takes from the same buckets, atomically. Instances'
    clocks should agree (NTP): a skew of s seconds moves a bucket by s times its rate."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._prefix = prefix
        self._script = client.register_script(_TAKE)

    async def take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, *, cost: int = 1
    ) -> float | None:
        args: list[float] = [now * 1000]
        for rate in rates:
            args += [rate.interval * cost * 1000, rate.tolerance * 1000]
        args.append(SLACK * 1000)
        found = await self._script(keys=[self._prefix + k for k in keys], args=args)
        wait = float(found.decode() if isinstance(found, bytes) else found) / 1000
        return wait if wait > 0 else None
