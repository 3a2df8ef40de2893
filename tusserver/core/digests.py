"""Running SHA-256 of each upload's bytes, computed while they stream in.

The catalog records a file's sha256 at finish without reading the file back. hashlib states
cannot be saved or shared, so each running hash lives in this process, keyed by upload id and
valid only at the offset it has seen: a PATCH that continues from there extends it; anything
else (a restart, a PATCH served by another instance, a chunk rolled back, an offset that
moved) drops it, and the catalog computes the digest from the stored bytes instead, off the
request path. Hashing runs in a worker thread in batches (hashlib releases the GIL on large
updates), so it overlaps with the network and the disk instead of stalling the event loop.

The same feed keeps a copy of the upload's first ``HEAD_BYTES``: the catalog sniffs the
content type from them (``take_head``) instead of reading them back from storage (two
thread hops on disk, a ranged GET on S3, per finished upload).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

# Bytes collected before one thread hop. Each feed holds up to two batches (one being
# hashed, one filling), so the size shrinks as more uploads hash at once, keeping their
# total near _BUDGET: 100 uploads of 4 MiB at once peaked at 285 MiB RSS with 1 MiB batches,
# 200 MiB with 256 KiB ones. A lone large upload keeps 1 MiB: at 256 KiB a 1 GiB PATCH
# took 0.4-0.5 s more CPU and ran 20-30% slower (four times the thread hops).
_BATCH_MAX = 1024 * 1024
_BATCH_MIN = 256 * 1024
_BUDGET = 32 * 1024 * 1024
# The prefix kept for content sniffing (catalog.sniff.SNIFF_BYTES may not exceed it).
HEAD_BYTES = 8192
# Heads of finished uploads waiting for the catalog: it takes each at once, so few wait.
_MAX_HEADS = 256
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _update(hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


class _Budget:
    """How many feeds are hashing right now, and so how large each one's batches are."""

    def __init__(self) -> None:
        self.active = 0

    def batch(self) -> int:
        return max(_BATCH_MIN, min(_BATCH_MAX, _BUDGET // max(1, self.active)))


class Feed:
    """One write's share of a running hash: wraps the body's chunks, counts what it hashed.

    Every chunk handed to the store is counted; ``settle`` must run after the store returns
    (whether or not it read the body to the end) before the hash may be used.
    """

    def __init__(
        self, hasher: Any, offset: int, head: bytes = b"", budget: _Budget | None = None
    ) -> None:
        self.hasher = hasher
        self.offset = offset
        self.hashed = 0
        # The upload's first bytes, while fewer than HEAD_BYTES are known (the hash is only
        # ever continued at its end, so a short head always ends where this feed starts).
        self.head = head
        self._batch: list[bytes] = []
        self._batch_size = 0
        self._pending: asyncio.Future[None] | None = None
        self._budget = budget if budget is not None else _Budget()

    async def wrap(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        budget = self._budget
        budget.active += 1
        try:
            async for chunk in chunks:
                self._batch.append(chunk)
                self._batch_size += len(chunk)
                self.hashed += len(chunk)
                if len(self.head) < HEAD_BYTES:
                    self.head += chunk[: HEAD_BYTES - len(self.head)]
                if self._batch_size >= budget.batch():
                    # One batch in the thread at a time keeps the updates in order.
                    if self._pending is not None:
                        await self._pending
                    batch, self._batch, self._batch_size = self._batch, [], 0
                    self._pending = asyncio.ensure_future(
                        asyncio.to_thread(_update, self.hasher, batch)
                    )
                yield chunk
        finally:
            budget.active -= 1

    async def settle(self) -> None:
        """Hash whatever was handed out but not hashed yet."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        if self._batch:
            # Small remainders (the common tail) are not worth a thread hop.
            _update(self.hasher, self._batch)
            self._batch, self._batch_size = [], 0


class ContentDigests:
    """The running hashes of the uploads this process is receiving (bounded, LRU)."""

    def __init__(self, max_entries: int = 4096, *, enabled: bool = True) -> None:
        self._enabled = enabled
        self._max = max_entries
        self._running: OrderedDict[str, tuple[int, Any, bytes]] = OrderedDict()
        self._heads: OrderedDict[str, bytes] = OrderedDict()
        self._budget = _Budget()

    def start(self, upload_id: str, offset: int) -> Feed | None:
        """A feed continuing the hash at ``offset``, or None when it cannot be continued."""
        entry = self._running.pop(upload_id, None)
        if not self._enabled:
            return None
        if offset == 0:
            return Feed(hashlib.sha256(), 0, budget=self._budget)
        if entry is not None and entry[0] == offset:
            return Feed(entry[1], offset, entry[2], budget=self._budget)
        return None

    async def commit(self, upload_id: str, feed: Feed | None, stored: int) -> None:
        """Keep the hash only if it covers exactly the bytes the store says it stored."""
        if feed is None:
            return
        await feed.settle()
        if feed.hashed != stored:
            return
        self._running[upload_id] = (feed.offset + stored, feed.hasher, feed.head)
        self._running.move_to_end(upload_id)
        while len(self._running) > self._max:
            self._running.popitem(last=False)

    def finish(self, upload_id: str, length: int) -> str | None:
        """The hex digest of a finished upload of ``length`` bytes, if it was seen whole."""
        entry = self._running.pop(upload_id, None)
        if length == 0:
            return EMPTY_SHA256
        if entry is None or entry[0] != length:
            return None
        self._heads[upload_id] = entry[2]
        while len(self._heads) > _MAX_HEADS:
            self._heads.popitem(last=False)
        return str(entry[1].hexdigest())

    def take_head(self, upload_id: str) -> bytes | None:
        """The first bytes (up to ``HEAD_BYTES``) of an upload ``finish`` saw whole, once."""
        return self._heads.pop(upload_id, None)

    def discard(self, upload_id: str) -> None:
        self._running.pop(upload_id, None)
        self._heads.pop(upload_id, None)
