"""Stopping a background task for certain: ``stop_task``.

Lock refreshers, claim keepers, listeners and senders run as tasks beside a request and are
stopped with ``cancel()``. One ``cancel()`` is a request, not a guarantee: a library may
swallow it. On Python 3.11 we measured it with redis-py: under load, a refresher cancelled
while its ``EVAL`` was completing came back from the call with the cancellation lost and
went on renewing its lease every second, forever. The request awaiting that refresher never
answered, and its upload stayed locked (1 in 100 concurrent uploads on S3+Redis in
``make bench``; a 200-lock stress test hit it within seconds). ``stop_task`` therefore
cancels again until the task is done, so no single lost cancellation can hang a request.
"""

from __future__ import annotations

import asyncio
from typing import Any

# How long one cancellation may take to land before it is repeated. A lost cancellation is
# a race, so the next one lands. A repeat also interrupts whatever clean-up the task is
# awaiting (a catalog worker's rollback, an S3 part's abort), so it waits long enough for
# those to finish; a lost cancellation, which is rare, delays its caller by this much.
RETRY_AFTER = 0.5


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it is done, repeating the cancellation if it is lost.

    The task's own result or error is dropped (it was told to stop). If the caller is
    cancelled meanwhile, the task still gets one more cancellation before that propagates.
    """
    if task is None:
        return
    try:
        while not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=RETRY_AFTER)
    finally:
        if not task.done():
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
