"""The parts of one write being uploaded: ``PartsInFlight``.

It owns the bounds on concurrent part uploads (per upload: ``concurrency``; per process: the
shared ``parts_in_flight`` semaphore), which also bound the spooled parts on local disk, and
the order in which uploaded parts count: only the contiguous prefix of finished parts is
durable, and a failed part stops everything after it from counting.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tusserver.core.tasks import stop_task
from tusserver.storage.partbuffer import PartBuffer
from tusserver.storage.s3.client import Part, S3Bucket
from tusserver.storage.s3.translate import spooling


class PartsInFlight:
    """The parts of one write being uploaded, kept in order, bounded per upload and per
    process."""

    def __init__(self, bucket: S3Bucket, key: str, upload_id: str) -> None:
        self._bucket = bucket
        self._key = key
        self._upload_id = upload_id
        self._local = asyncio.Semaphore(bucket.config.concurrency)
        self._global = bucket.config.parts_in_flight
        # (where the part ends in the upload, its number, its size, its upload task)
        self._pending: deque[tuple[int, int, int, asyncio.Task[str]]] = deque()
        # The parts this write stored, in order (finish may complete with them).
        self.stored: list[Part] = []

    async def submit(self, number: int, part: PartBuffer, end: int) -> None:
        """Upload the full ``part`` as part ``number``; this takes ownership of it."""
        try:
            with spooling():
                body = await part.seal()
            # Waiting here stops the body from being read: that bounds the parts on disk.
            await self._local.acquire()
            try:
                await self._global.acquire()
            except BaseException:
                self._local.release()
                raise
        except BaseException:
            part.close()
            raise
        task = asyncio.create_task(
            self._bucket.upload_part(self._key, self._upload_id, number, body)
        )
        # A done callback, not a `finally` in the task: it also runs for a task cancelled
        # before it started. The file is freed as soon as the part is uploaded (or not).
        task.add_done_callback(lambda _: self._release(part))
        self._pending.append((end, number, part.size, task))

    def _release(self, part: PartBuffer) -> None:
        self._global.release()
        self._local.release()
        part.close()

    def durable(self) -> tuple[int | None, BaseException | None]:
        """Pop the finished parts at the front, in order.

        Returns where the last successful one ends and the error of a failed one (which
        stays at the front: nothing after it counts).
        """
        end: int | None = None
        while self._pending and self._pending[0][3].done():
            part_end, number, size, task = self._pending[0]
            if task.cancelled():
                return end, asyncio.CancelledError()
            error = task.exception()
            if error is not None:
                return end, error
            self._pending.popleft()
            self.stored.append(Part(number, size, task.result()))
            end = part_end
        return end, None

    async def wait(self) -> None:
        tasks = [entry[3] for entry in self._pending]
        if tasks:
            await asyncio.wait(tasks)

    async def cancel(self) -> None:
        tasks = [entry[3] for entry in self._pending]
        await asyncio.gather(*(stop_task(task) for task in tasks))
        self._pending.clear()
