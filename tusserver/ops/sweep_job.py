"""A whole sweep: every kind of stale storage, one pass at a time, one sweeper at a time.

Each pass, under the sweeper lease: expired unfinished uploads are terminated
(``sweeper.sweep_once``), storage that no upload state knows (S3 multipart uploads, local
files) older than a grace period is removed, and the extra passes (the catalog reclaims the
bytes of deleted files and requeues lost processing) run. A busy upload is never torn down:
every step takes the upload's lock without asking its holder to let go, and skips it.
The server runs this periodically; ``tusserver sweep`` runs it as its own process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tusserver.core.uploads import UploadService
from tusserver.ops.sweeper import SweepPass, sweep_once
from tusserver.state.lease import Lease
from tusserver.storage.base import KnownCheck

log = logging.getLogger("tusserver.sweeper")


@dataclass
class SweepJob:
    service: UploadService
    lease: Lease
    # Storage nobody knows about is removed only once older than this (seconds): a creation
    # in progress has its storage a moment before its state.
    orphan_grace: float = 86400.0
    passes: Sequence[tuple[str, SweepPass]] = field(default_factory=tuple)
    # Whether any record knows an upload id (tus state, direct uploads); default: tus state.
    is_known: KnownCheck | None = None

    async def run_once(self) -> dict[str, Any]:
        """One pass; returns its report (``{"skipped": ...}`` if another sweeper works)."""
        async with self.lease.hold() as held:
            if not held:
                log.info("sweep.skipped", extra={"reason": "another sweeper holds the lease"})
                return {"skipped": "another sweeper holds the lease"}
            started = time.monotonic()
            report: dict[str, Any] = {}
            try:
                report["uploads"] = dataclasses.asdict(await sweep_once(self.service))
            except Exception:
                log.exception("sweep.pass_failed", extra={"pass": "uploads"})
                report["uploads"] = {"error": True}
            report["orphans_removed"] = await self._orphans()
            for name, job in self.passes:
                try:
                    report[name] = await job()
                except Exception:
                    log.exception("sweep.pass_failed", extra={"pass": name})
                    report[name] = {"error": True}
            report["seconds"] = round(time.monotonic() - started, 3)
            log.info("sweep.done", extra={"report": report})
            return report

    async def _orphans(self) -> int | None:
        sweeper = self.service.ctx.composer.orphan_sweeper
        if sweeper is None:
            return None
        cutoff = self.service.ctx.clock() - self.orphan_grace
        try:
            return await sweeper.sweep_orphans(self.is_known or self.service.exists, cutoff)
        except Exception:
            log.exception("sweep.pass_failed", extra={"pass": "orphans"})
            return None

    async def run_forever(self, interval: float) -> None:
        """A pass every ``interval`` seconds until cancelled; a failed pass does not stop it."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once()
            except Exception:
                log.exception("sweep.failed")
