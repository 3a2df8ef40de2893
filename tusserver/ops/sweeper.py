"""The expiry pass: reclaims unfinished uploads that went idle past their expiry.

``sweep_job`` runs it, with the other passes, under the sweeper lease.

A pass never tears down an upload under a running PATCH: it takes each upload's lock without
asking the holder to let go, and skips the upload if it is busy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tusserver import errors
from tusserver.core.uploads import UploadService

log = logging.getLogger("tusserver.sweeper")

# Another job run on every pass (the catalog reclaims deleted files' bytes); returns a report.
SweepPass = Callable[[], Awaitable[object]]


@dataclass
class SweepReport:
    expired: int = 0
    bytes_freed: int = 0
    skipped_busy: int = 0
    failed: int = 0


async def sweep_once(service: UploadService) -> SweepReport:
    report = SweepReport()
    if not service.expires:
        return report
    now = service.ctx.clock()
    candidates = [info async for info in service.ctx.state.expired(now)]
    for candidate in candidates:
        try:
            async with service.locked(candidate.id, request_release=False, wait=0):
                info = await service.ctx.state.get(candidate.id)
                if info is None or not service.is_expired(info):
                    continue  # finished or renewed since the scan
                await service.terminate(info, event="upload.expired")
                report.expired += 1
                report.bytes_freed += info.offset
        except errors.Locked:
            report.skipped_busy += 1
        except Exception:
            report.failed += 1
            log.exception("sweep.upload_failed", extra={"upload_id": candidate.id})
    service.ctx.metrics.swept(
        expired=report.expired,
        bytes_freed=report.bytes_freed,
        skipped_busy=report.skipped_busy,
        failed=report.failed,
    )
    log.info("sweep.done", extra=vars(report))
    return report
