"""Token buckets shared by the workers of one server: a table in a file they all map.

With ``serve --workers N`` a client's requests reach any worker, so a limit kept in each
worker's memory would admit up to N times the rate. The buckets (``security.buckets``' GCRA:
one arrival time per key) live instead in a fixed table in a file of the group's run dir,
which every worker maps into memory: 16-byte slots of (key hash, arrival time).

A take is one critical section under an exclusive record lock on the whole file (``lockf``;
the kernel drops it if its process dies), held for the few microseconds of reading and
writing the slots of its keys, with nothing awaited inside, so the event loop's other tasks
cannot interleave either. A worker that finds the lock taken yields to its loop and tries
again rather than block it.

A key's slot is found by its hash, looking at ``_PROBE`` neighbours. A new key takes a free
slot, a refilled one (the same as none), or else the one that refills first; the key it
displaces is handed a full bucket, so a full table errs towards admitting, never towards
refusing a caller it never saw.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from tusserver.security.buckets import SLACK, Rate, _advance

_SLOT = struct.Struct("<Qd")  # key hash (0: empty), arrival time
_PROBE = 4
_RETRY = 0.0002


def _key_hash(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") | 1  # never 0, the empty slot's mark


class SharedBuckets:
    """``Buckets`` in a file mapped by every worker (see the module docstring)."""

    def __init__(self, path: Path, *, slots: int = 1 << 16) -> None:
        self._slots = slots
        size = slots * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # zeros: every slot empty
        self._map = mmap.mmap(self._fd, size)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    async def take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, *, cost: int = 1
    ) -> float | None:
        while True:
            if self._try_lock():
                break
            # Another worker is inside for microseconds: let this loop's tasks run meanwhile.
            await asyncio.sleep(_RETRY)
        try:
            return self._take(keys, rates, now, cost)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _try_lock(self) -> bool:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _take(
        self, keys: Sequence[str], rates: Sequence[Rate], now: float, cost: int
    ) -> float | None:
        found = [self._find(_key_hash(key), now) for key in keys]
        advanced = [
            _advance(tat, rate, now, cost) for (_, _, tat), rate in zip(found, rates, strict=True)
        ]
        wait = max(early for _, early in advanced)
        if wait > SLACK:
            return wait
        for (index, hashed, _), (tat, _) in zip(found, advanced, strict=True):
            _SLOT.pack_into(self._map, index * _SLOT.size, hashed, tat)
        return None

    def _find(self, hashed: int, now: float) -> tuple[int, int, float | None]:
        """(slot index, key hash, the key's arrival time or None) for ``hashed``."""
        start = hashed % self._slots
        best, best_tat = start, float("inf")
        for step in range(_PROBE):
            index = (start + step) % self._slots
            owner, tat = _SLOT.unpack_from(self._map, index * _SLOT.size)
            if owner == hashed:
                return index, hashed, tat
            if owner == 0 or tat <= now:
                tat = float("-inf")  # free, or refilled: as good as empty
            if tat < best_tat:
                best, best_tat = index, tat
        return best, hashed, None
