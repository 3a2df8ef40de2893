"""Group commit of small blocking calls: the items queued while one worker-thread call runs
are done together, in the next one.

A worker-thread hop costs two thread wake-ups and a hand-over of the GIL each way; for an
operation that is one ``open`` and a directory fsync (a new upload's empty file, a catalog
outbox mark) the hop costs more CPU than the work. Under 16 concurrent creations the calls
arrive while one is running, so a group takes several of them, and its directory fsync (the
slow part) is shared as well.

Each caller still gets its own result or error, and returns only once its own item is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupedCall(Generic[T, R]):
    """``await grouped(item)``: ``run(items)`` in a worker thread, for every item queued.

    ``run`` returns one outcome per item, in order: a result, or an exception instance that
    is raised to that item's caller alone. If ``run`` itself raises, every item of its group
    gets that error. One group runs at a time, so ``run`` never races with itself.
    """

    def __init__(self, run: Callable[[Sequence[T]], Sequence[R | BaseException]]) -> None:
        self._run = run
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_queued())
        return await future

    async def _run_queued(self) -> None:
        try:
            while self._queued:
                group, self._queued = self._queued, []
                try:
                    outcomes = await asyncio.to_thread(self._run, [item for item, _ in group])
                except Exception as exc:
                    _fail(group, exc)
                except BaseException as exc:
                    # Cancelled (shutdown): nobody queued behind may wait for ever either.
                    _fail([*group, *self._queued], exc)
                    self._queued.clear()
                    raise
                else:
                    for (_, future), outcome in zip(group, outcomes, strict=True):
                        if future.done():  # its caller was cancelled
                            continue
                        if isinstance(outcome, BaseException):
                            future.set_exception(outcome)
                        else:
                            future.set_result(outcome)
        finally:
            self._runner = None


def _fail(group: Sequence[tuple[object, asyncio.Future[R]]], error: BaseException) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(error)
