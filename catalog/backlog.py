"""The sweep's ``catalog_outbox`` pass: records finished uploads whose record was not written.

A finished upload is in the outbox (``tusserver.state.outbox``) from before its finish is
acknowledged until its INSERT commits. When the database was down at finish (or the process
died between the two), the mark stays, and this pass, run by every sweep under the sweeper
lease (the server's periodic one, or ``tusserver sweep``), records it from the upload state,
which holds everything the record needs (size, sha256, metadata, owner, times).

Per mark, under the upload's lock (so a tus DELETE or a purge cannot interleave, and a busy
upload is left for the next pass):

* no upload (terminated, expired, purged, or a direct complete that failed before writing
  its state): the mark goes; nothing is left to record;
* unfinished (its finish was cut short before it wrote the finished state, so no client was
  told): the mark stays; the finish that completes it records it, or expiry removes it;
* finished: recorded. The INSERT is keyed by upload id (``ON CONFLICT DO NOTHING``), so an
  upload recorded meanwhile, or by another sweeper, is not recorded twice; ``record`` clears
  the mark once the row is committed. A database still down keeps it for the next pass.

No full scan of finished uploads is needed for the window between finishing and recording:
the mark is written before the finished state, so every acknowledged finish has one.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from typing import Protocol

from catalog.service import Catalog
from tusserver import errors
from tusserver.models import UploadInfo
from tusserver.state.outbox import CatalogOutbox

log = logging.getLogger("tusserver.catalog")

# Marks handled per pass: a long outage's backlog drains over a few sweeps, and one pass
# stays bounded in time.
BATCH = 500


class _BacklogMetrics(Protocol):
    def catalog_backlog(self, *, pending: int, recorded: int) -> None: ...


class _UploadContext(Protocol):
    @property
    def metrics(self) -> _BacklogMetrics: ...


class UploadService(Protocol):
    """What the pass needs of ``tusserver.core.uploads.UploadService``: the upload's lock, its
    state (rebuilt from storage when lost) and the metrics sink. Declared here so that the
    catalog does not import the upload core it is plugged into (see the layer contracts in
    pyproject.toml)."""

    @property
    def ctx(self) -> _UploadContext: ...

    def locked(
        self, upload_id: str, *, request_release: bool = True, wait: float | None = None
    ) -> AbstractAsyncContextManager[object]: ...

    async def get(self, upload_id: str, *, owner: str | None) -> UploadInfo: ...


@dataclass
class BacklogReport:
    recorded: int = 0
    dropped: int = 0
    unfinished: int = 0
    busy: int = 0
    failed: int = 0
    pending: int = 0


async def record_backlog(
    service: UploadService, catalog: Catalog, outbox: CatalogOutbox, *, limit: int = BATCH
) -> dict[str, int]:
    """One pass over up to ``limit`` marks; returns what became of them."""
    report = BacklogReport()
    for upload_id in await outbox.pending(limit):
        try:
            outcome = await _redeliver(service, catalog, outbox, upload_id)
        except errors.Locked:
            report.busy += 1
            continue
        except Exception as exc:
            # The database (or the store) is still down: the mark waits for the next pass.
            report.failed += 1
            log.warning(
                "catalog.backlog_record_failed",
                extra={"upload_id": upload_id, "error": type(exc).__name__},
            )
            continue
        setattr(report, outcome, getattr(report, outcome) + 1)
    report.pending = await outbox.count()
    service.ctx.metrics.catalog_backlog(pending=report.pending, recorded=report.recorded)
    if report.recorded or report.pending:
        level = logging.WARNING if report.pending else logging.INFO
        log.log(level, "catalog.backlog", extra=asdict(report))
    return asdict(report)


async def _redeliver(
    service: UploadService, catalog: Catalog, outbox: CatalogOutbox, upload_id: str
) -> str:
    """One mark, under the upload's lock; returns the report field it counts in."""
    async with service.locked(upload_id, request_release=False, wait=0):
        try:
            # Rebuilt from storage if the state store lost it (Redis flushed).
            info = await service.get(upload_id, owner=None)
        except errors.NotFound:
            info = None
        if info is None or info.is_partial:
            await outbox.remove(upload_id)
            return "dropped"
        if info.finished_at is None:
            return "unfinished"
        await catalog.record(info)
        log.info("catalog.recorded_late", extra={"upload_id": upload_id})
        return "recorded"
