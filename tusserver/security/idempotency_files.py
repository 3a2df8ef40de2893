"""``Idempotency-Key`` records shared by the workers of one server: one file per slot.

With ``serve --workers N`` a client's retry may reach another worker than its first try, so
the records cannot live in one process's memory (``LocalIdempotencyStore``). This store
keeps each slot's record as a small JSON file in a directory of the worker group's run dir
(private to the server, gone when it stops, as the in-memory records are), and makes every
read-compare-write one critical section under an exclusive ``flock`` on the directory's lock
file: ``claim`` is atomic across processes as ``SET NX`` is in Redis, and ``extend``,
``save`` and ``release`` act only while the record still holds the caller's token.

A record is written to a temporary file and renamed into place (readers never see half of
one). Nothing is fsynced: like the other stores', these records are a short-lived cache that
a crash of the whole server may lose. Expired records are removed every ``_PURGE_EVERY``
claims in each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tusserver.security.idempotency import Record, StoredResponse

_SLOT = re.compile(r"[0-9a-f]{64}")
_PURGE_EVERY = 256


class FileIdempotencyStore:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._root = root
        self._clock = clock
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_path = root / ".lock"
        self._claims = 0

    # -- the protocol (each call one critical section, in a worker thread) ---------------

    async def claim(
        self, slot: str, fingerprint: str, ttl: float
    ) -> tuple[str | None, Record | None]:
        self._claims += 1
        purge = self._claims % _PURGE_EVERY == 0
        return await asyncio.to_thread(self._claim, slot, fingerprint, ttl, purge)

    async def extend(self, slot: str, token: str, ttl: float) -> None:
        await asyncio.to_thread(self._rewrite, slot, token, ttl, None)

    async def save(
        self, slot: str, token: str, fingerprint: str, response: StoredResponse, ttl: float
    ) -> None:
        await asyncio.to_thread(self._rewrite, slot, token, ttl, response)

    async def release(self, slot: str, token: str) -> None:
        await asyncio.to_thread(self._release, slot, token)

    # -- under the lock ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _path(self, slot: str) -> Path:
        if _SLOT.fullmatch(slot) is None:  # Idempotency.slot is a sha256 in hex
            raise ValueError("an idempotency slot is a sha256 in hex")
        return self._root / f"{slot}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The live record at ``path``, or None (missing, expired or unreadable)."""
        try:
            data = json.loads(path.read_bytes())
            live = float(data["expires_at"]) > self._clock()
            if not live or not isinstance(data["token"], str) or not isinstance(data["fp"], str):
                return None
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None  # a record torn by hand or from another version reads as none
        return data  # type: ignore[no-any-return]

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(dir=self._root, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(data, file, separators=(",", ":"))
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _claim(
        self, slot: str, fingerprint: str, ttl: float, purge: bool
    ) -> tuple[str | None, Record | None]:
        path = self._path(slot)
        with self._locked():
            if purge:
                self._purge()
            existing = self._read(path)
            if existing is not None:
                stored = existing.get("response")
                response = StoredResponse.from_json(stored) if stored is not None else None
                return None, Record(str(existing["fp"]), response)
            token = secrets.token_hex(16)
            record = {"token": token, "fp": fingerprint, "response": None}
            self._write(path, {**record, "expires_at": self._clock() + ttl})
            return token, None

    def _rewrite(self, slot: str, token: str, ttl: float, response: StoredResponse | None) -> None:
        """Renew the record (and store the answer, if given) while it is still ``token``'s."""
        path = self._path(slot)
        with self._locked():
            existing = self._read(path)
            if existing is None or existing.get("token") != token:
                return  # expired and maybe claimed by another request: not ours any more
            if response is not None:
                existing["response"] = response.to_json()
            existing["expires_at"] = self._clock() + ttl
            self._write(path, existing)

    def _release(self, slot: str, token: str) -> None:
        path = self._path(slot)
        with self._locked():
            existing = self._read(path)
            if existing is not None and existing.get("token") == token:
                path.unlink(missing_ok=True)

    def _purge(self) -> None:
        with os.scandir(self._root) as entries:
            paths = [Path(e.path) for e in entries if e.name.endswith(".json")]
        for path in paths:
            if self._read(path) is None:
                path.unlink(missing_ok=True)
