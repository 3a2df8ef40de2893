"""One-time download tokens: minted for one file, redeemed exactly once.

Only a hash of each token is stored, so a leaked store hands out nothing. Redemption is a
single atomic take (``GETDEL`` on Redis; a dict pop in the one event loop locally): of any
number of concurrent redemptions exactly one gets the record. Local tokens live in memory and
die with the process; distributed deployments keep them in Redis, shared by every instance.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_BYTES = 32


@dataclass(frozen=True)
class OneTimeGrant:
    file_id: str
    owner: str
    expires_at: int
    attachment_filename: str | None = None


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OneTimeStore(Protocol):
    async def put(self, token: str, grant: OneTimeGrant) -> None: ...

    async def take(self, token: str) -> OneTimeGrant | None:
        """The grant, removed; None when unknown, already taken or expired."""
        ...

    async def drop_expired(self) -> int:
        """Forget expired grants (the sweeper); returns how many."""
        ...


def _encode(grant: OneTimeGrant) -> str:
    return json.dumps(grant.__dict__, separators=(",", ":"))


def _decode(raw: bytes | str) -> OneTimeGrant | None:
    try:
        data: dict[str, Any] = json.loads(raw)
        return OneTimeGrant(**data)
    except (ValueError, TypeError):
        return None


class LocalOneTimeStore:
    def __init__(self, *, clock: Callable[[], float] = time.time, max_entries: int = 100_000):
        self._clock = clock
        self._max = max_entries
        self._grants: dict[str, OneTimeGrant] = {}

    async def put(self, token: str, grant: OneTimeGrant) -> None:
        if len(self._grants) >= self._max:
            await self.drop_expired()
            if len(self._grants) >= self._max:
                # Bounded memory: the oldest grant goes first.
                self._grants.pop(next(iter(self._grants)))
        self._grants[token_hash(token)] = grant

    async def take(self, token: str) -> OneTimeGrant | None:
        # No await between the lookup and the removal: atomic within the event loop.
        grant = self._grants.pop(token_hash(token), None)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    async def drop_expired(self) -> int:
        now = self._clock()
        doomed = [key for key, grant in self._grants.items() if grant.expires_at <= now]
        for key in doomed:
            del self._grants[key]
        return len(doomed)


class RedisOneTimeStore:
    def __init__(self, client: Any, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._prefix = f"{prefix}onetime:"
        self._clock = clock

    async def put(self, token: str, grant: OneTimeGrant) -> None:
        ttl = max(1, int(grant.expires_at - self._clock()))
        await self._redis.set(self._prefix + token_hash(token), _encode(grant), ex=ttl)

    async def take(self, token: str) -> OneTimeGrant | None:
        raw = await self._redis.getdel(self._prefix + token_hash(token))
        if raw is None:
            return None
        grant = _decode(raw)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    async def drop_expired(self) -> int:
        return 0  # Redis expires the keys itself
