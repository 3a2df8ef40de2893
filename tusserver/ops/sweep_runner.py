"""``tusserver sweep``: the sweep job as a process of its own (distributed deployments run one
or more beside the servers; the lease lets one work at a time).

It opens the same runtime as the server (``tusserver.compose.open_runtime``), so it runs the
same job with the same passes and listeners; it only serves no HTTP.
"""

from __future__ import annotations

from typing import Any

from tusserver.compose import open_runtime
from tusserver.settings import Settings


async def run_sweeper(settings: Settings, *, once: bool) -> dict[str, Any]:
    """One pass (``once``: returns its report) or passes every ``sweep_interval`` forever."""
    async with open_runtime(settings) as runtime:
        job = runtime.sweep_job
        if not once:
            await job.run_forever(settings.sweep_interval)
        report = await job.run_once()
        if runtime.catalog is not None:
            # Processing the pass requeued (lost sha256 or probe work) finishes before exit.
            await runtime.catalog.drain()
        return report
    raise AssertionError("unreachable")  # pragma: no cover
