"""Upload locks across processes (``state.process_locks``, ``state.mailbox``): real processes.

A spawned child process holds an upload's lock with its own ``ProcessLocker`` over the same
lock file and mailbox directory; this process then asks for the same upload. Checked: the
release request reaches the holder in the other process and the waiter gets the lock within
a fraction of a second; a holder deaf to requests makes the waiter answer 423 after ``wait``;
a SIGKILLed holder frees the lock at once; the sweeper's probe (``wait=0``, no release
request) never disturbs the holder; two uploads never block each other.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tusserver.errors import Locked
from tusserver.state.mailbox import ReleaseMailbox
from tusserver.state.process_locks import ProcessLocker, lock_offset

MakeLocker = Callable[[], ProcessLocker]
UPLOAD = "a" * 32
OTHER = "b" * 32


def _hold(root: str, upload_id: str, heed: bool, report: Connection) -> None:
    """The child: hold ``upload_id`` until asked to let go (or forever, if not ``heed``)."""

    async def main() -> None:
        locker = ProcessLocker(Path(root) / "locks", ReleaseMailbox(Path(root) / "mailbox"))
        asked = asyncio.Event()
        try:
            async with locker.lock(upload_id, wait=5) as handle:
                handle.on_release_request(asked.set)
                report.send("held")
                if heed:
                    await asked.wait()
                    report.send("asked")
                else:
                    await asyncio.sleep(3600)
        finally:
            locker.close()

    asyncio.run(main())


class Holder:
    def __init__(self, root: Path, upload_id: str = UPLOAD, *, heed: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self.events, child_end = context.Pipe(duplex=False)
        self.process = context.Process(target=_hold, args=(str(root), upload_id, heed, child_end))
        self.process.start()
        child_end.close()
        assert self.events.poll(30), "the child did not take the lock"
        assert self.events.recv() == "held"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.events.close()


@pytest.fixture
def make_locker(tmp_path: Path) -> Iterator[Callable[[], ProcessLocker]]:
    """This process's locker over ``tmp_path`` (the children use the same files)."""
    opened: list[ProcessLocker] = []

    def make() -> ProcessLocker:
        opened.append(ProcessLocker(tmp_path / "locks", ReleaseMailbox(tmp_path / "mailbox")))
        return opened[-1]

    yield make
    for locker in opened:
        locker.close()


async def test_the_holder_in_another_process_lets_go_when_asked(
    tmp_path: Path, make_locker: MakeLocker
) -> None:
    holder = Holder(tmp_path)
    try:
        started = time.monotonic()
        async with make_locker().lock(UPLOAD, wait=3):
            elapsed = time.monotonic() - started
        assert holder.events.poll(5)
        assert holder.events.recv() == "asked"
        assert elapsed < 0.5
    finally:
        holder.stop()


async def test_a_deaf_holder_makes_the_waiter_answer_423_after_the_wait(
    tmp_path: Path, make_locker: MakeLocker
) -> None:
    holder = Holder(tmp_path, heed=False)
    try:
        started = time.monotonic()
        with pytest.raises(Locked):
            async with make_locker().lock(UPLOAD, wait=0.4):
                pass
        assert 0.4 <= time.monotonic() - started < 1.0
    finally:
        holder.stop()


async def test_a_killed_holder_frees_the_upload_at_once(
    tmp_path: Path, make_locker: MakeLocker
) -> None:
    holder = Holder(tmp_path, heed=False)
    try:
        os.kill(holder.process.pid or 0, signal.SIGKILL)
        holder.process.join(5)
        started = time.monotonic()
        async with make_locker().lock(UPLOAD, wait=0):
            pass
        assert time.monotonic() - started < 0.1
    finally:
        holder.stop()


async def test_the_sweepers_probe_neither_waits_nor_asks(
    tmp_path: Path, make_locker: MakeLocker
) -> None:
    holder = Holder(tmp_path)
    try:
        with pytest.raises(Locked):
            async with make_locker().lock(UPLOAD, wait=0, request_release=False):
                pass
        assert not holder.events.poll(0.3), "the probe must not ask the holder to let go"
    finally:
        holder.stop()


async def test_other_uploads_are_not_blocked(tmp_path: Path, make_locker: MakeLocker) -> None:
    holder = Holder(tmp_path, OTHER, heed=False)
    try:
        assert lock_offset(UPLOAD) != lock_offset(OTHER)
        async with make_locker().lock(UPLOAD, wait=0):
            pass
    finally:
        holder.stop()


async def test_contention_inside_one_process_is_settled_by_the_in_process_lock(
    tmp_path: Path, make_locker: MakeLocker
) -> None:
    locker = make_locker()
    order: list[str] = []

    async def holder() -> None:
        async with locker.lock(UPLOAD, wait=1) as handle:
            asked = asyncio.Event()
            handle.on_release_request(asked.set)
            order.append("held")
            await asked.wait()
            order.append("asked")

    task = asyncio.create_task(holder())
    while not order:
        await asyncio.sleep(0.001)
    async with locker.lock(UPLOAD, wait=1):
        order.append("second")
    await task
    assert order == ["held", "asked", "second"]
