"""Idempotency-Key: a retried creation replays the first answer instead of creating twice.

Owns the rule and where its records live; ``tusserver.edge.idempotent_http`` applies it to HTTP
(a decorator for JSON handlers, a raw ASGI wrapper for the tus ``POST``).

The rule, ``Idempotency.run(key, user, fingerprint, produce)``:

- keys are scoped per user (``user`` is the principal's id), so two users never share one;
- the first request with a key runs ``produce``; while it runs, the same key answers 409
  ``ERR_IDEMPOTENCY_IN_PROGRESS`` (it never runs twice);
- a 2xx answer is kept for ``TUS_IDEMPOTENCY_TTL`` seconds (10 minutes) and replayed to
  every repeat: status, headers and body, byte for byte;
- any other answer (or an exception) is not kept and frees the key, so the client may retry
  with it: a 4xx/5xx describes a request that created nothing we could replay;
- the same key with a different request (another fingerprint) is 422
  ``ERR_IDEMPOTENCY_KEY_REUSED``, whether the first is done or still running.

Records live in this process (bounded, expiring) or, in distributed mode, in Redis: the
in-flight marker is ``SET NX`` with a short TTL renewed while the request runs (so a crashed
instance frees the key within a minute), then replaced by the response with the long TTL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from starlette.responses import Response

from tusserver import errors
from tusserver.core.tasks import stop_task

HEADER = "Idempotency-Key"
# Marks a replayed answer (Stripe's name); everything else is the first answer unchanged.
REPLAYED_HEADER = "Idempotent-Replayed"
DEFAULT_TTL = 600.0
# How long an in-flight marker outlives a crashed holder; renewed every third of it.
IN_FLIGHT_TTL = 60.0
# Printable ASCII, space included (Stripe's and the IETF draft's keys are opaque strings).
_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def parse_key(raw: str) -> str:
    """The key from the header value, or 400 ``ERR_INVALID_IDEMPOTENCY_KEY``."""
    key = raw.strip(" \t")
    if _KEY.fullmatch(key) is None:
        raise errors.InvalidIdempotencyKey()
    return key


def fingerprint(method: str, path: str, parts: Iterable[str | bytes | None]) -> str:
    """What makes two requests "the same": method, path and the given parts, hashed."""
    digest = hashlib.sha256(f"{method.upper()}\0{path}".encode())
    for part in parts:
        data = b"\xff" if part is None else part.encode() if isinstance(part, str) else part
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    """An answer as it is replayed; ``replayed`` is set on copies served from the store."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    replayed: bool = False

    @classmethod
    def of(cls, response: Response) -> StoredResponse:
        """From a buffered Starlette response (``JSONResponse``, ``Response``)."""
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.raw_headers
        )
        return cls(response.status_code, headers, bytes(response.body))

    def to_response(self) -> Response:
        response = Response(self.body, status_code=self.status)
        # Exactly the stored headers (Content-Length and Content-Type included).
        response.raw_headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers
        ]
        if self.replayed:
            response.raw_headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
        return response

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": [list(pair) for pair in self.headers],
            "body": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredResponse:
        return cls(
            int(data["status"]),
            tuple((str(name), str(value)) for name, value in data["headers"]),
            base64.b64decode(data["body"]),
        )


@dataclass(frozen=True)
class Record:
    fingerprint: str
    response: StoredResponse | None  # None: the first request is still running


class IdempotencyStore(Protocol):
    """Records by slot (a hash of user and key). ``claim`` is atomic: exactly one caller
    gets a token for a free slot; the token guards ``extend``, ``save`` and ``release``."""

    async def claim(
        self, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str | None, Record | None]: ...

    async def extend(self, slot: str, token: str, ttl: float) -> None: ...

    async def save(
        self, slot: str, token: str, fingerprint: str, response: StoredResponse, ttl: float
    ) -> None: ...

    async def release(self, slot: str, token: str) -> None: ...


@dataclass
class _Entry:
    token: str
    fingerprint: str
    response: StoredResponse | None
    expires_at: float

    @property
    def size(self) -> int:
        """Bytes this entry holds, roughly: what the byte budget counts."""
        response = self.response
        if response is None:
            return _ENTRY_OVERHEAD
        headers = sum(len(name) + len(value) for name, value in response.headers)
        return _ENTRY_OVERHEAD + len(response.body) + headers


# Per entry, besides the response: the slot, token and fingerprint strings, the objects.
_ENTRY_OVERHEAD = 512
# The count alone does not bound memory: a multipart create's answer lists up to 1,000 part
# URLs (a quarter of a MiB), so 10,000 of them would be gigabytes.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


class LocalIdempotencyStore:
    """One process: an ordered dict (oldest write first), bounded in entries and in bytes.

    Expired entries are dropped when their slot is looked up and, from the old end, on every
    claim, so the table shrinks back once the traffic that filled it is over instead of
    holding every answer until the bound evicts it. Past a bound the oldest entries go first
    (their keys then run again, as after the TTL).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._clock = clock
        self._max = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _put(self, slot: str, entry: _Entry) -> None:
        self._drop(slot)
        self._entries[slot] = entry  # a new write goes last: the dict stays oldest first
        self._bytes += entry.size
        while self._entries and (len(self._entries) > self._max or self._bytes > self._max_bytes):
            self._drop(next(iter(self._entries)))

    def _drop(self, slot: str) -> None:
        entry = self._entries.pop(slot, None)
        if entry is not None:
            self._bytes -= entry.size

    def _purge_expired(self) -> None:
        now = self._clock()
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            self._drop(slot)

    def _live(self, slot: str) -> _Entry | None:
        entry = self._entries.get(slot)
        if entry is not None and entry.expires_at <= self._clock():
            self._drop(slot)
            return None
        return entry

    async def claim(
        self, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str | None, Record | None]:
        # No await between the check and the insert: atomic on the event loop.
        self._purge_expired()
        entry = self._live(slot)
        if entry is not None:
            return None, Record(entry.fingerprint, entry.response)
        token = secrets.token_hex(16)
        self._put(slot, _Entry(token, fingerprint, None, self._clock() + ttl))
        return token, None

    def _own(self, slot: str, token: str) -> _Entry | None:
        entry = self._entries.get(slot)
        return entry if entry is not None and entry.token == token else None

    async def extend(self, slot: str, token: str, ttl: float) -> None:
        entry = self._own(slot, token)
        if entry is not None:
            entry.expires_at = self._clock() + ttl

    async def save(
        self, slot: str, token: str, fingerprint: str, response: StoredResponse, ttl: float
    ) -> None:
        if self._own(slot, token) is not None:
            self._put(slot, _Entry(token, fingerprint, response, self._clock() + ttl))

    async def release(self, slot: str, token: str) -> None:
        if self._own(slot, token) is not None:
            self._drop(slot)


# Compare-and-act on the exact in-flight value, so a holder whose marker expired (and was
# claimed by someone else) can never overwrite or delete the newer record.
_SAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisIdempotencyStore:
    """Distributed mode: one Redis string per slot holding JSON. The token handed out by
    ``claim`` is the exact in-flight value, which the scripts compare against."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        from redis.exceptions import RedisError

        self._client = client
        self._prefix = prefix
        self._failures: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._save = client.register_script(_SAVE)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        try:
            yield
        except self._failures:
            raise errors.StorageUnavailable("idempotency records are unavailable; retry") from None

    async def claim(
        self, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str | None, Record | None]:
        key = self._prefix + slot
        token = json.dumps({"fp": fingerprint, "token": secrets.token_hex(16)})
        async with self._translated():
            # The record may expire between a failed SET NX and the GET: try again.
            for _ in range(3):
                if await self._client.set(key, token, nx=True, px=_ms(ttl)):
                    return token, None
                existing = await self._client.get(key)
                if existing is not None:
                    return None, _parse(existing)
        return None, Record(fingerprint, None)

    async def extend(self, slot: str, token: str, ttl: float) -> None:
        async with self._translated():
            await self._extend(keys=[self._prefix + slot], args=[token, _ms(ttl)])

    async def save(
        self, slot: str, token: str, fingerprint: str, response: StoredResponse, ttl: float
    ) -> None:
        value = json.dumps({"fp": fingerprint, "response": response.to_json()})
        async with self._translated():
            await self._save(keys=[self._prefix + slot], args=[token, value, _ms(ttl)])

    async def release(self, slot: str, token: str) -> None:
        async with self._translated():
            await self._release(keys=[self._prefix + slot], args=[token])


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _parse(raw: bytes | str) -> Record:
    try:
        data = json.loads(raw)
        stored = data.get("response")
        return Record(
            str(data["fp"]), StoredResponse.from_json(stored) if stored is not None else None
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not ours to interpret (a foreign value under our prefix): never replay it.
        raise errors.StorageUnavailable("an idempotency record is unreadable") from None


class Idempotency:
    """The rule (see the module docstring) over a store; ``store`` is swapped for Redis when
    the app's backends open."""

    def __init__(self, store: IdempotencyStore, *, ttl: float = DEFAULT_TTL) -> None:
        self.store = store
        self.ttl = ttl

    @staticmethod
    def slot(user: str, key: str) -> str:
        return hashlib.sha256(f"{user}\0{key}".encode()).hexdigest()

    async def run(
        self,
        key: str,
        user: str,
        fingerprint: str,
        produce: Callable[[], Awaitable[StoredResponse]],
    ) -> StoredResponse:
        slot = self.slot(user, key)
        store = self.store
        token, existing = await store.claim(slot, fingerprint, IN_FLIGHT_TTL)
        if token is None:
            assert existing is not None
            if existing.fingerprint != fingerprint:
                raise errors.IdempotencyKeyReused()
            if existing.response is None:
                raise errors.IdempotencyInProgress(headers={"Retry-After": "1"})
            return replace(existing.response, replayed=True)
        keeper = asyncio.create_task(self._keep_claim(store, slot, token))
        try:
            response = await produce()
        except BaseException:
            await stop_task(keeper)
            await store.release(slot, token)
            raise
        await stop_task(keeper)
        if 200 <= response.status < 300:
            await store.save(slot, token, fingerprint, response, self.ttl)
        else:
            await store.release(slot, token)
        return response

    @staticmethod
    async def _keep_claim(store: IdempotencyStore, slot: str, token: str) -> None:
        """Renew the in-flight marker while a long request (a big creation-with-upload)
        runs; a renewal that fails only risks a duplicate after a crash, so it is ignored."""
        while True:
            await asyncio.sleep(IN_FLIGHT_TTL / 3)
            with contextlib.suppress(errors.TusError):
                await store.extend(slot, token, IN_FLIGHT_TTL)
