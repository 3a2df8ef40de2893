"""The ``local`` state backend: every shared table in the data directory or this process
(one server process, or the workers of ``serve --workers N``; ``tusserver sweep`` beside it
shares the files).

With workers, the upload locks are OS locks in the data dir with release requests through
the group's mailbox (``state.process_locks``). The sweeper lease is a file lock already. The
tables a single process keeps in memory move to the group's run dir, shared by its workers:
``Idempotency-Key`` records as files (``security.idempotency_files``), rate-limit buckets and
download quotas as tables every worker maps (``security.buckets_shared``).
"""

from __future__ import annotations

from delivery.quota import BucketQuota, LocalQuota, Quota
from delivery.tokens import LocalOneTimeStore, OneTimeStore
from tusserver.api.direct_state import DirectRecords, LocalDirectRecords
from tusserver.compose.shared import Clock
from tusserver.ops.metrics import NO_METRICS, MetricsSink
from tusserver.security.buckets import Buckets, LocalBuckets
from tusserver.security.buckets_shared import SharedBuckets
from tusserver.security.idempotency import IdempotencyStore, LocalIdempotencyStore
from tusserver.security.idempotency_files import FileIdempotencyStore
from tusserver.settings import Settings
from tusserver.state import group
from tusserver.state.base import Locker, StateStore
from tusserver.state.lease import FileLease, Lease
from tusserver.state.local import LocalStateStore
from tusserver.state.locks import InProcessLocker
from tusserver.state.mailbox import ReleaseMailbox
from tusserver.state.outbox import LOCAL_DIR, CatalogOutbox, LocalCatalogOutbox
from tusserver.state.process_locks import ProcessLocker

# The one file whose bytes are the upload locks of a worker group (state.process_locks).
UPLOAD_LOCKS = ".uploads.lock"


class LocalState:
    def __init__(self, settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> None:
        self._data_dir = settings.data_dir
        self._metrics = metrics

    def state(self) -> StateStore:
        return LocalStateStore(self._data_dir)

    def locker(self) -> Locker:
        if not group.locks_across_processes():
            return InProcessLocker(metrics=self._metrics)
        workers = group.current()
        # A member hears release requests; `tusserver sweep` never holds an upload long.
        mailbox = ReleaseMailbox(workers.mailbox_dir) if workers is not None else None
        return ProcessLocker(self._data_dir / UPLOAD_LOCKS, mailbox, metrics=self._metrics)

    def lease(self) -> Lease:
        return FileLease(self._data_dir / ".sweeper.lock")

    def outbox(self) -> CatalogOutbox:
        return LocalCatalogOutbox(self._data_dir / LOCAL_DIR)

    def idempotency(self, clock: Clock) -> IdempotencyStore:
        workers = group.current()
        if workers is None:
            return LocalIdempotencyStore(clock=clock)
        # A retry may reach another worker than the first try.
        return FileIdempotencyStore(workers.run_dir / "idempotency", clock=clock)

    def rate_buckets(self) -> Buckets:
        workers = group.current()
        if workers is None:
            return LocalBuckets()
        # A client's requests reach every worker: one table for all of them.
        return SharedBuckets(workers.run_dir / "rate-buckets")

    def onetime_tokens(self, clock: Clock) -> OneTimeStore:
        return LocalOneTimeStore(self._data_dir / "delivery" / "onetime", clock=clock)

    def quota(self, per_day: int, clock: Clock) -> Quota:
        workers = group.current()
        if workers is None:
            return LocalQuota(per_day, clock=clock)
        return BucketQuota(SharedBuckets(workers.run_dir / "quota-buckets"), per_day, clock=clock)

    def direct_records(self, clock: Clock) -> DirectRecords:
        return LocalDirectRecords(self._data_dir / "direct" / "records")
