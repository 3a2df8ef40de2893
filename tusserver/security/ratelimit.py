"""Rate limits on upload creation and the JSON API: 429 ``ERR_RATE_LIMITED`` with Retry-After.

Owns the limits (``TUS_RATE_LIMIT_PER_USER``, ``_PER_IP``, ``_CREATIONS_PER_USER``: sustained
requests per minute, 0 = off; each with a ``_BURST``), who a request counts against and the
ASGI middleware that enforces them. The buckets (in-process, or Redis in distributed mode) are
``tusserver.security.buckets`` and the caller's address ``tusserver.security.peers``, leaves
that delivery's download quota shares.

- **What is limited**: every ``/api/`` route and every creation (``POST`` to the tus
  endpoint, ``/api/v1/uploads/init``). PATCH/HEAD/GET on upload URLs are not: a resuming
  client must never be locked out of its own upload. OPTIONS, ``/healthz``, ``/readyz`` and
  ``/metrics`` are never counted.
- **Algorithm**: a token bucket per limit and caller, holding up to ``burst`` requests and
  refilled at the sustained rate. It is kept as one number, the bucket's "theoretical arrival
  time" (GCRA): each admitted request pushes it ``60 / rate`` seconds on, and a request is
  refused when that would put it more than ``burst`` intervals ahead of now. The bursts are
  sized so a well-behaved client never meets them (a folder of a thousand files dropped at
  once); only sustained excess is refused, with ``Retry-After`` the whole seconds until the
  bucket admits the request again. A refused request takes nothing, so a client that waits
  as told gets through.
- **Why 429 and not 503**: tus-js-client (4.x) retries neither 429 nor any other 4xx but
  409/423, while Uppy retries 429 (it pauses its whole queue). A 503 would make plain
  tus-js-client retry, but only 4 times within 9 s whatever Retry-After says, it would count
  as a server error in every monitor and load balancer, and it would multiply an abusive
  script's load instead of shedding it. The burst, not the status, is what keeps ordinary
  clients whole.
- **Memory**: a bucket that has refilled is the same as no bucket, so it is dropped (Redis:
  its key expires exactly then; in process: least recently used buckets are dropped as they
  refill, and past ``max_keys`` the least recently used one goes regardless, which hands that
  caller a fresh burst, a price only a flood of distinct callers pays).
- **Who**: the authenticated user's id, or for anonymous callers their IP (all anonymous
  callers are one user, who must not share one budget). The IP is the connection's peer; with
  ``TUS_TRUST_PROXY`` it is the right-most ``X-Forwarded-For`` entry (the address our proxy
  saw and appended; entries left of it are client-supplied and spoofable). IPv6 addresses
  count per /64, which one subscriber usually holds whole.
- A bucket backend that fails lets requests through (logged): the limit protects capacity,
  it is not worth an outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Sequence

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.edge.jsonapi import json_error
from tusserver.edge.responses import error_response

# The buckets and the caller's address live in leaf modules that delivery's download quota
# shares; they are re-exported here, where the app and the rate-limit tests have always found
# them.
from tusserver.security.buckets import Buckets, Rate
from tusserver.security.buckets import LocalBuckets as LocalBuckets
from tusserver.security.buckets import RedisBuckets as RedisBuckets
from tusserver.security.peers import client_ip
from tusserver.security.principal import SCOPE_KEY, Principal
from tusserver.settings import Settings

log = logging.getLogger("tusserver.ratelimit")

API_PREFIX = "/api/"


class RateLimiter:
    """Token buckets over a backend; ``buckets`` is swapped for Redis when the app's backends
    open."""

    def __init__(self, buckets: Buckets, *, clock: Callable[[], float] = time.time) -> None:
        self.buckets = buckets
        self._clock = clock

    async def check(self, limits: Sequence[tuple[str, Rate]]) -> int | None:
        """Count a request against ``(name, rate)`` limits (a rate of 0 per minute is off);
        the whole seconds to wait (Retry-After) when one refuses it, else None."""
        active = [(name, rate) for name, rate in limits if rate.per_minute > 0]
        if not active:
            return None
        wait = await self.buckets.take(
            [name for name, _ in active], [rate for _, rate in active], self._clock()
        )
        if wait is None:
            return None
        return max(1, math.ceil(wait))


class RateLimitMiddleware:
    """Pure ASGI, inside authentication (the principal is known) and outside the tus
    protocol layer and every route. ``creation_paths`` are the paths a ``POST`` creates an
    upload on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: Callable[[Scope], RateLimiter | None],
        settings: Settings,
        creation_paths: Collection[str],
        exempt_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        # Requests that carry an upload's bytes (signed part PUTs) are exempt, as tus PATCH
        # is: a fast client sending many parts must not be throttled mid-file.
        self.exempt_prefixes = tuple(exempt_prefixes)
        # The runtime's limiter (None: not ready; nothing is served then anyway).
        self.limiter = limiter
        self.settings = settings
        self.creation_paths = frozenset(creation_paths)
        self.tus_base = settings.base_path

    def _limits(self, scope: Scope) -> list[tuple[str, Rate]] | None:
        path: str = scope["path"]
        creation = scope["method"] == "POST" and path in self.creation_paths
        if not creation and not path.startswith(API_PREFIX):
            return None
        if self.exempt_prefixes and path.startswith(self.exempt_prefixes):
            return None
        ip = client_ip(scope, trust_proxy=self.settings.trust_proxy)
        principal = scope.get(SCOPE_KEY)
        who = f"u:{principal.user_id}" if isinstance(principal, Principal) else f"ip:{ip}"
        settings = self.settings
        limits = [
            (f"ip:{ip}", Rate(settings.rate_limit_per_ip, settings.rate_limit_per_ip_burst)),
            (
                f"user:{who}",
                Rate(settings.rate_limit_per_user, settings.rate_limit_per_user_burst),
            ),
        ]
        if creation:
            rate = Rate(
                settings.rate_limit_creations_per_user,
                settings.rate_limit_creations_per_user_burst,
            )
            limits.append((f"new:{who}", rate))
        return limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        limits = self._limits(scope)
        limiter = self.limiter(scope) if limits is not None else None
        retry_after = None
        if limits is not None and limiter is not None:
            try:
                retry_after = await limiter.check(limits)
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
