"""``tusserver sweep``: the sweep job as a process of its own (distributed deployments run one
or more beside the servers; the lease lets one work at a time)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from catalog.service import Catalog
from catalog.setup import open_catalog
from tusserver.app import catalog_outbox, sweep_job
from tusserver.context import TusContext
from tusserver.hooks import Hooks
from tusserver.listener import FanOut, NullListener
from tusserver.settings import Settings
from tusserver.uploads import UploadService
from tusserver.wiring import open_components


async def run_sweeper(settings: Settings, *, once: bool) -> dict[str, Any]:
    """One pass (``once``: returns its report) or passes every ``sweep_interval`` forever."""
    async with contextlib.AsyncExitStack() as stack:
        parts = await open_components(settings, stack)
        # Expiries and purges reach the webhook receiver from this process too.
        hooks = Hooks.from_settings(settings)
        await stack.enter_async_context(hooks.running())
        listener = FanOut([hooks.webhook]) if hooks.webhook is not None else NullListener()
        service = UploadService(
            TusContext(
                settings=settings,
                composer=parts.composer,
                state=parts.state,
                locker=parts.locker,
                listener=listener,
                clock=time.time,
                outbox=catalog_outbox(settings, parts),
            )
        )
        catalog: Catalog | None = None
        if settings.catalog:
            catalog = await open_catalog(
                settings, parts.composer, stack, clock=time.time, outbox=service.ctx.outbox
            )
        job = sweep_job(settings, service, parts, catalog, direct_events=listener)
        if not once:
            await job.run_forever(settings.sweep_interval)
        report = await job.run_once()
        if catalog is not None:
            # Processing the pass requeued (lost sha256 or probe work) finishes before exit.
            await catalog.drain()
        return report
    raise AssertionError("unreachable")  # pragma: no cover
