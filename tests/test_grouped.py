"""GroupedCall: calls queued while one group runs share the next worker-thread call, and each
caller gets its own outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from tusserver.core.grouped import GroupedCall


class _Recorder:
    """A ``run`` that blocks its first group until released, recording every group."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()

    def run(self, items: Sequence[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        self.threads.add(threading.current_thread().name)
        if len(self.groups) == 1:
            assert self.release.wait(5)
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def test_calls_queued_meanwhile_run_as_one_group() -> None:
    recorder = _Recorder()
    grouped: GroupedCall[int, int] = GroupedCall(recorder.run)
    first = asyncio.ensure_future(grouped(1))
    await asyncio.sleep(0.05)  # the first group is running (blocked) in its thread
    rest = [asyncio.ensure_future(grouped(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert recorder.groups == [[1], [2, 3, 4]]
    assert threading.current_thread().name not in recorder.threads


async def test_an_item_error_reaches_its_caller_alone() -> None:
    recorder = _Recorder()
    recorder.release.set()
    grouped: GroupedCall[int, int] = GroupedCall(recorder.run)
    results = await asyncio.gather(grouped(5), grouped(-1), grouped(6), return_exceptions=True)
    assert results[0] == 50
    assert results[2] == 60
    assert isinstance(results[1], ValueError)


async def test_a_failed_group_fails_each_of_its_callers_and_the_next_group_runs() -> None:
    calls: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(items))
        if len(calls) == 1:
            raise OSError("disk gone")
        return list(items)

    grouped: GroupedCall[int, int] = GroupedCall(run)
    results = await asyncio.gather(grouped(1), grouped(2), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    assert await grouped(3) == 3


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = _Recorder()
    grouped: GroupedCall[int, int] = GroupedCall(recorder.run)
    first = asyncio.ensure_future(grouped(1))
    await asyncio.sleep(0.05)
    waiting = [asyncio.ensure_future(grouped(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    recorder.release.set()
    assert await first == 10
    assert await waiting[1] == 30
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
