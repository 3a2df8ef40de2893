"""What a state backend provides: every table the server's instances must agree on.

A state backend (``TUS_STATE``) is one object that builds all of them: upload state, locks,
the sweeper lease, the catalog outbox, ``Idempotency-Key`` records, rate-limit buckets,
one-time download tokens, download quotas and direct-upload records. ``local`` keeps them in
the data directory and this process; ``redis`` in one Redis every instance shares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from delivery.quota import Quota
from delivery.tokens import OneTimeStore
from tusserver.api.direct_state import DirectRecords
from tusserver.security.buckets import Buckets
from tusserver.security.idempotency import IdempotencyStore
from tusserver.state.base import Locker, StateStore
from tusserver.state.lease import Lease
from tusserver.state.outbox import CatalogOutbox

Clock = Callable[[], float]


class StartupError(RuntimeError):
    """A backend is misconfigured or unreachable; the message says which and how."""


class SharedState(Protocol):
    """Builds each shared table; the composition root calls each method once."""

    def state(self) -> StateStore: ...

    def locker(self) -> Locker: ...

    def lease(self) -> Lease: ...

    def outbox(self) -> CatalogOutbox: ...

    def idempotency(self, clock: Clock) -> IdempotencyStore: ...

    def rate_buckets(self) -> Buckets: ...

    def onetime_tokens(self, clock: Clock) -> OneTimeStore: ...

    def quota(self, per_day: int, clock: Clock) -> Quota: ...

    def direct_records(self, clock: Clock) -> DirectRecords: ...
