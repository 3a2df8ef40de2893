"""Fences: what a request holding Redis locks carries, so stale holders cannot write.

A Redis lock is a lease: it lapses a few seconds after its holder stops renewing it, so an
instance that dies does not strand its uploads. The price is that a holder which is merely
paused (a stalled event loop, a partition from Redis) can outlive its lease while another
instance takes the upload over. A ``Fence`` makes such a holder harmless:

* its ``valid_until`` is when the lease lapses at the latest, measured on this process's
  monotonic clock from the moment the acquiring or renewing request was *sent* (so never
  later than Redis's own expiry). ``check`` refuses once that passes or once renewal found
  the lock gone: storage calls it before every side effect (a part, the tail object), a
  local test that needs no round trip;
* its ``key`` and ``token`` go with every state write for that upload: the Redis state store
  writes through a Lua script that refuses unless the lock still holds this token, so the
  offset can never be moved by anyone but the current holder (atomic in the same Redis that
  grants the lock, so the random token suffices: no counter is needed to order holders).

The fences a request holds live in a context variable set by the locker for the ``async
with`` block, so the callers (uploads, handlers) need not pass anything down; tasks started
inside the block (S3 part uploads) inherit them. The embedded locker sets none: every check
is then a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from tusserver import errors

# Never mutated: each acquisition sets a new mapping, so tasks that inherited the old one
# (and the block's exit) see exactly the fences they held.
_HELD: ContextVar[Mapping[str, Fence]] = ContextVar("tus_fences", default=MappingProxyType({}))


class Fence:
    """One acquisition of one upload's Redis lock (see the module docstring)."""

    __slots__ = ("cancelled_holder", "holder", "key", "lost", "token", "valid_until")

    def __init__(self, key: str, token: str, valid_until: float) -> None:
        self.key = key
        self.token = token
        self.valid_until = valid_until
        self.lost = False
        # The task inside the lock's ``async with`` body, while it is there: the locker
        # cancels it when the lease is lost, so it stops at whatever it awaits.
        self.holder: asyncio.Task[Any] | None = None
        self.cancelled_holder = False

    def valid(self) -> bool:
        return not self.lost and asyncio.get_running_loop().time() < self.valid_until

    def check(self) -> None:
        if not self.valid():
            raise errors.LockLost()


@contextlib.contextmanager
def holding(upload_id: str, fence: Fence) -> Iterator[None]:
    """Make ``fence`` the current one for ``upload_id`` in this context."""
    token = _HELD.set({**_HELD.get(), upload_id: fence})
    try:
        yield
    finally:
        _HELD.reset(token)


def current(upload_id: str) -> Fence | None:
    """The fence this context holds for ``upload_id``, if any (state writes use it)."""
    return _HELD.get().get(upload_id)


def check_held() -> None:
    """Raise ``LockLost`` if any lock this context holds has lapsed or was lost.

    Storage calls this before each write: a request holds the lock of the upload it writes
    (and, finishing a partial, that of a final), and must stop if any of them is gone.
    """
    for fence in _HELD.get().values():
        fence.check()
