"""The expiry sweeper: reclaims unfinished uploads that went idle past their expiry.

A pass never tears down an upload under a running PATCH: it takes each upload's lock without
asking the holder to let go, and skips the upload if it is busy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tusserver import errors
from tusserver.uploads import UploadService

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
    log.info("sweep.done", extra=vars(report))
    return report


async def sweep_forever(
    service: UploadService, interval: float, passes: Sequence[SweepPass] = ()
) -> None:
    """Run passes every ``interval`` seconds until cancelled; a failed pass does not stop it."""
    while True:
        await asyncio.sleep(interval)
        for job in (lambda: sweep_once(service), *passes):
            try:
                report = await job()
            except Exception:
                log.exception("sweep.failed")
            else:
                log.debug("sweep.pass_done", extra={"report": report})
