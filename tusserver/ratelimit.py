"""Rate limits on upload creation and the JSON API: 429 ``ERR_RATE_LIMITED`` with Retry-After.

Owns the limits (``TUS_RATE_LIMIT_PER_USER``, ``_PER_IP``, ``_CREATIONS_PER_USER``, requests
per minute, 0 = off), who a request counts against, the counters (in-process, or Redis in
distributed mode) and the ASGI middleware that enforces them.

- **What is limited**: every ``/api/`` route and every creation (``POST`` to the tus
  endpoint, ``/api/v1/uploads/init``). PATCH/HEAD/GET on upload URLs are not: a resuming
  client must never be locked out of its own upload. OPTIONS, ``/healthz``, ``/readyz`` and
  ``/metrics`` are never counted.
- **Algorithm**: fixed one-minute windows aligned to the clock. Each request increments
  ``<limit>:<who>:<window>`` (Redis: ``INCR``, then ``PEXPIRE`` on the first hit, in one Lua
  script for all of a request's counters) and is refused when a counter passes its limit;
  ``Retry-After`` is the whole seconds until the window ends. Cheap and exact per window; a
  burst of up to twice the limit across a window boundary is the accepted price.
- **Who**: the authenticated user's id, or for anonymous callers their IP (all anonymous
  callers are one user, who must not share one budget). The IP is the connection's peer; with
  ``TUS_TRUST_PROXY`` it is the right-most ``X-Forwarded-For`` entry (the address our proxy
  saw and appended; entries left of it are client-supplied and spoofable). IPv6 addresses
  count per /64, which one subscriber usually holds whole.
- A counter backend that fails lets requests through (logged): the limit protects capacity,
  it is not worth an outage.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.jsonapi import json_error
from tusserver.principal import SCOPE_KEY, Principal
from tusserver.responses import error_response
from tusserver.settings import Settings

log = logging.getLogger("tusserver.ratelimit")

WINDOW = 60
API_PREFIX = "/api/"


class WindowCounter(Protocol):
    async def hit(self, keys: Sequence[str], limits: Sequence[int], ttl: float) -> int | None:
        """Count one request against each key in order, stopping at the first one past its
        limit: that key's index, or None when every count is within its limit."""
        ...


class LocalWindowCounter:
    """One process: counts per key; entries of past windows are dropped when it grows."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._counts: dict[str, int] = {}
        self._max = max_keys

    async def hit(self, keys: Sequence[str], limits: Sequence[int], ttl: float) -> int | None:
        if len(self._counts) + len(keys) > self._max:
            self._trim(keys)
        for index, (key, limit) in enumerate(zip(keys, limits, strict=True)):
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if count > limit:
                return index
        return None

    def _trim(self, current: Sequence[str]) -> None:
        # Keys end in their window number; anything not of the current window is over.
        window = current[0].rsplit(":", 1)[1]
        self._counts = {k: v for k, v in self._counts.items() if k.endswith(":" + window)}
        if len(self._counts) + len(current) > self._max:
            self._counts.clear()  # a flood of distinct callers in one window: start over


_HIT = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('PEXPIRE', key, ARGV[#KEYS + 1]) end
  if count > tonumber(ARGV[i]) then return i end
end
return 0
"""


class RedisWindowCounter:
    """Distributed mode: every instance counts in the same Redis keys, atomically."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._prefix = prefix
        self._script = client.register_script(_HIT)

    async def hit(self, keys: Sequence[str], limits: Sequence[int], ttl: float) -> int | None:
        args = [*limits, max(1, int(ttl * 1000))]
        found = int(await self._script(keys=[self._prefix + k for k in keys], args=args))
        return found - 1 if found else None


class RateLimiter:
    """Fixed windows over a counter; ``counter`` is swapped for Redis when the app's backends
    open."""

    def __init__(self, counter: WindowCounter, *, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter
        self._clock = clock

    async def check(self, limits: Sequence[tuple[str, int]]) -> int | None:
        """Count a request against ``(name, per_minute)`` limits (0 = off); the seconds to
        wait (Retry-After) when one is exceeded, else None."""
        active = [(name, limit) for name, limit in limits if limit > 0]
        if not active:
            return None
        now = self._clock()
        window = int(now // WINDOW)
        keys = [f"{name}:{window}" for name, _ in active]
        # Kept a little past the window so a clock skew between instances cannot reset it.
        exceeded = await self.counter.hit(keys, [limit for _, limit in active], WINDOW + 5)
        if exceeded is None:
            return None
        return max(1, math.ceil((window + 1) * WINDOW - now))


def client_ip(scope: Scope, *, trust_proxy: bool) -> str:
    """Who is calling, network-wise (see the module docstring)."""
    client = scope.get("client")
    address = client[0] if client else ""
    if trust_proxy:
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops = [hop.strip() for hop in bytes(value).decode("latin-1").split(",")]
                if hops and hops[-1]:
                    address = hops[-1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimitMiddleware:
    """Pure ASGI, inside authentication (the principal is known) and outside the tus
    protocol layer and every route. ``creation_paths`` are the paths a ``POST`` creates an
    upload on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        settings: Settings,
        creation_paths: Collection[str],
        exempt_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        # Requests that carry an upload's bytes (signed part PUTs) are exempt, as tus PATCH
        # is: a fast client sending many parts must not be throttled mid-file.
        self.exempt_prefixes = tuple(exempt_prefixes)
        self.limiter = limiter
        self.settings = settings
        self.creation_paths = frozenset(creation_paths)
        self.tus_base = settings.base_path

    def _limits(self, scope: Scope) -> list[tuple[str, int]] | None:
        path: str = scope["path"]
        creation = scope["method"] == "POST" and path in self.creation_paths
        if not creation and not path.startswith(API_PREFIX):
            return None
        if self.exempt_prefixes and path.startswith(self.exempt_prefixes):
            return None
        ip = client_ip(scope, trust_proxy=self.settings.trust_proxy)
        principal = scope.get(SCOPE_KEY)
        who = f"u:{principal.user_id}" if isinstance(principal, Principal) else f"ip:{ip}"
        limits = [
            (f"ip:{ip}", self.settings.rate_limit_per_ip),
            (f"user:{who}", self.settings.rate_limit_per_user),
        ]
        if creation:
            limits.append((f"new:{who}", self.settings.rate_limit_creations_per_user))
        return limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        limits = self._limits(scope)
        retry_after = None
        if limits is not None:
            try:
                retry_after = await self.limiter.check(limits)
            except Exception as exc:
                log.warning("ratelimit.unavailable", extra={"error": type(exc).__name__})
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        error = errors.RateLimited(headers={"Retry-After": str(retry_after)})
        response: Response
        path: str = scope["path"]
        if path.startswith(self.tus_base) or path == self.tus_base.rstrip("/"):
            response = error_response(error, method=scope["method"])
        else:
            response = json_error(error)
        await response(scope, receive, send)
