"""stop_task: a background task is stopped even when one cancellation is lost."""

from __future__ import annotations

import asyncio

import pytest

from tusserver.core.tasks import stop_task


async def test_a_task_that_swallows_its_first_cancellation_still_stops() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a library racing its own cancellation does

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_task(task), 5)
    assert task.cancelled()
    assert swallowed == 1


async def test_the_error_of_a_stopped_task_is_dropped_not_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    await stop_task(task)  # a task told to stop: its outcome is not the caller's
    assert isinstance(task.exception(), RuntimeError)


async def test_none_and_finished_tasks_are_fine() -> None:
    await stop_task(None)
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await stop_task(task)


async def test_a_cancelled_caller_still_cancels_the_task() -> None:
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # a clean-up that takes its time

    task = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(task))
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.sleep(0.01)
    assert task.done()
