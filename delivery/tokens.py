"""One-time download tokens: minted for one file, redeemed exactly once.

Only a hash of each token is stored, so a leaked store hands out nothing. Redemption is a
single atomic take (``GETDEL`` on Redis; the unlink of the grant's file locally): of any number
of concurrent redemptions exactly one gets the record. Local grants are files in the data
directory, so a token minted for a week survives restarts of the embedded server as its
uploads do; distributed deployments keep them in Redis, shared by every instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tusserver.core.fsutil import atomic_write, fsync_dir

TOKEN_BYTES = 32
# A grant's file name: the token's sha256 in hex (never anything a client chose).
_GRANT_FILE = re.compile(r"[0-9a-f]{64}\.json")
# atomic_write's temporary files ("." + name + random + ".tmp"), left behind by a crash.
_TEMP_FILE = re.compile(r"\.[0-9a-f]{64}\.json\.[0-9a-f]+\.tmp")
_TEMP_GRACE = 3600.0


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
    """One small file per grant, named by the token's hash, in a directory of its own.

    Put is an atomic, fsynced write. Take reads the file and unlinks it: the one caller whose
    unlink succeeds has redeemed the token (threads or processes alike), and the directory is
    fsynced before it answers, so a crash cannot bring a redeemed token back.
    """

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = 100_000,
    ) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._max = max_entries
        self._count: int | None = None  # grants on disk, counted on first use

    def _path(self, token: str) -> Path:
        return self._root / f"{token_hash(token)}.json"

    async def put(self, token: str, grant: OneTimeGrant) -> None:
        if self._count is None:
            self._count = await asyncio.to_thread(self._count_files)
        if self._count >= self._max:
            await self.drop_expired()
            if self._count >= self._max:
                # Bounded disk: the oldest grants go first.
                self._count -= await asyncio.to_thread(
                    self._drop_oldest, self._count - self._max + 1
                )
        await asyncio.to_thread(atomic_write, self._path(token), _encode(grant).encode())
        self._count += 1

    async def take(self, token: str) -> OneTimeGrant | None:
        taken, grant = await asyncio.to_thread(self._take, self._path(token))
        if taken and self._count is not None:
            self._count -= 1  # on the loop's thread only, like every change of the count
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant

    def _take(self, path: Path) -> tuple[bool, OneTimeGrant | None]:
        try:
            raw = path.read_bytes()
            os.unlink(path)
        except FileNotFoundError:
            return False, None  # unknown, or another redemption's unlink came first
        fsync_dir(self._root)
        return True, _decode(raw)

    async def drop_expired(self) -> int:
        dropped, remaining = await asyncio.to_thread(self._drop_expired, self._clock())
        self._count = remaining
        return dropped

    def _grants(self) -> list[os.DirEntry[str]]:
        with os.scandir(self._root) as entries:
            return [e for e in entries if _GRANT_FILE.fullmatch(e.name)]

    def _count_files(self) -> int:
        return len(self._grants())

    def _drop_expired(self, now: float) -> tuple[int, int]:
        dropped = remaining = 0
        stale_before = time.time() - _TEMP_GRACE
        with os.scandir(self._root) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):  # taken or dropped meanwhile
                    if _TEMP_FILE.fullmatch(entry.name):
                        if entry.stat().st_mtime < stale_before:
                            os.unlink(entry.path)
                        continue
                    if not _GRANT_FILE.fullmatch(entry.name):
                        continue
                    with open(entry.path, "rb") as f:
                        grant = _decode(f.read())
                    if grant is not None and grant.expires_at > now:
                        remaining += 1
                        continue
                    os.unlink(entry.path)
                    dropped += 1
        return dropped, remaining

    def _drop_oldest(self, count: int) -> int:
        aged = []
        for entry in self._grants():
            with contextlib.suppress(FileNotFoundError):
                aged.append((entry.stat().st_mtime, entry.path))
        dropped = 0
        for _, path in sorted(aged)[:count]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                dropped += 1
        return dropped


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
