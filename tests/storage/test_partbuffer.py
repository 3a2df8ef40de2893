"""PartBuffer: memory below the limit, an anonymous file past it, exact bytes either way, and
no descriptor closed under a thread that still writes to it."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tests.iospy import PwritevSpy
from tusserver.storage.partbuffer import BATCH, PartBuffer

KiB = 1024
MiB = 1024 * KiB


class Files:
    """Records every temporary file PartBuffer creates (the stdlib call, not ours)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created: list[BinaryIO] = []
        self.dirs: list[Any] = []
        real = tempfile.TemporaryFile

        def temporary_file(*args: Any, **kwargs: Any) -> Any:
            file = real(*args, **kwargs)
            self.dirs.append(kwargs.get("dir"))
            self.created.append(file)
            return file

        monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> Files:
    return Files(monkeypatch)


def sealed_bytes(body: bytes | BinaryIO) -> bytes:
    if isinstance(body, bytes):
        return body
    assert body.tell() == 0
    data = body.read()
    body.seek(0)
    return data


async def cancel_then_release(
    task: asyncio.Task[Any], buffer: PartBuffer, release: threading.Event
) -> None:
    """Cancel the task waiting on a held-up thread, close the buffer, then let the thread go."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    buffer.close()
    release.set()


async def first_file_closed(created: Sequence[Any]) -> None:
    """Wait (up to 2 s) until the first spool file created is closed."""
    for _ in range(200):
        if created and created[0].closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the spool file was never closed")


async def test_stays_in_memory_up_to_the_limit(files: Files) -> None:
    buffer = PartBuffer(memory_limit=1000)
    pieces = [os.urandom(100) for _ in range(10)]
    for piece in pieces:
        await buffer.append(piece)
    assert buffer.size == 1000
    assert not buffer.spilled
    assert buffer.memory == 1000
    body = await buffer.seal()
    assert body == b"".join(pieces)
    buffer.close()
    assert files.created == []


async def test_spills_past_the_limit_into_an_anonymous_file(files: Files, tmp_path: Path) -> None:
    limit, piece_size = 64 * KiB, 10 * KiB
    buffer = PartBuffer(memory_limit=limit, spool_dir=tmp_path)
    data = os.urandom(3 * MiB)
    for i in range(0, len(data), piece_size):
        await buffer.append(data[i : i + piece_size])
        if buffer.size <= limit:
            assert not buffer.spilled
            assert buffer.memory == buffer.size
        else:
            assert buffer.spilled
            # What waits and what is being written: the limit, one batch, and the pieces
            # that overflowed each (the batch never exceeds the limit).
            assert buffer.memory <= limit + min(limit, BATCH) + 2 * piece_size
    assert len(files.created) == 1
    assert files.dirs == [tmp_path]
    # Already unlinked: nothing to see, nothing to clean up after a crash.
    assert os.listdir(tmp_path) == []
    body = await buffer.seal()
    assert body is files.created[0]
    assert buffer.memory == 0
    assert sealed_bytes(body) == data
    buffer.close()
    assert files.created[0].closed


async def test_the_first_spill_writes_what_was_held(files: Files) -> None:
    buffer = PartBuffer(memory_limit=100)
    await buffer.append(b"a" * 60)
    await buffer.append(b"b" * 40)
    assert not buffer.spilled
    await buffer.append(b"c")
    assert buffer.spilled
    body = await buffer.seal()
    assert sealed_bytes(body) == b"a" * 60 + b"b" * 40 + b"c"
    buffer.close()


@pytest.mark.parametrize("seed", range(6))
async def test_random_pieces_and_limits_give_exact_bytes(seed: int, files: Files) -> None:
    rng = random.Random(seed)
    limit = rng.choice([0, 1, 777, 64 * KiB, MiB, 3 * MiB])
    buffer = PartBuffer(memory_limit=limit, batch=rng.choice([1, 4 * KiB, 100 * KiB, BATCH]))
    total = rng.randrange(0, 5 * MiB)
    data = rng.randbytes(total)
    position = 0
    while position < total:
        size = rng.choice([1, rng.randrange(1, 2 * KiB), rng.randrange(1, 300 * KiB)])
        piece: bytes | memoryview = data[position : position + size]
        if rng.random() < 0.5:
            piece = memoryview(data)[position : position + size]
        await buffer.append(piece)
        position += size
    body = await buffer.seal()
    assert buffer.spilled == (total > limit)
    assert isinstance(body, bytes) == (total <= limit)
    assert sealed_bytes(body) == data
    buffer.close()
    assert all(file.closed for file in files.created)


async def test_a_write_that_just_ended_is_followed_in_the_same_file(files: Files) -> None:
    # Regression: the moment a thread job is done, its done callbacks are only scheduled. An
    # append then must still write into the file the spill created, not make a second one.
    buffer = PartBuffer(memory_limit=0)
    data = os.urandom(64 * KiB)
    for i in range(0, len(data), 4 * KiB):
        await buffer.append(data[i : i + 4 * KiB])
        while buffer.memory:  # done, as seen from here: its callbacks have not run yet
            await asyncio.sleep(0)
    assert len(files.created) == 1
    assert sealed_bytes(await buffer.seal()) == data
    buffer.close()


async def test_many_small_pieces(files: Files) -> None:
    buffer = PartBuffer(memory_limit=16 * KiB)
    data = os.urandom(2 * MiB + 13)
    for i in range(0, len(data), 13):
        await buffer.append(data[i : i + 13])
    assert sealed_bytes(await buffer.seal()) == data
    buffer.close()


async def test_one_huge_piece(files: Files) -> None:
    buffer = PartBuffer(memory_limit=MiB)
    data = os.urandom(20 * MiB + 1)
    await buffer.append(memoryview(data))
    assert buffer.spilled
    assert sealed_bytes(await buffer.seal()) == data
    buffer.close()
    assert len(files.created) == 1
    assert files.created[0].closed


async def test_zero_limit_writes_every_piece(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    real_pwritev = os.pwritev

    def pwritev(fd: int, buffers: Any, position: int) -> int:
        writes.append(sum(len(b) for b in buffers))
        return real_pwritev(fd, buffers, position)

    monkeypatch.setattr(os, "pwritev", pwritev)
    buffer = PartBuffer(memory_limit=0)
    pieces = [os.urandom(n) for n in (5, 70_000, 1, 3000)]
    for piece in pieces:
        await buffer.append(piece)
        assert buffer.memory <= len(piece)
    assert sealed_bytes(await buffer.seal()) == b"".join(pieces)
    assert writes == [5, 70_000, 1, 3000]
    buffer.close()


async def test_empty_buffer_seals_to_nothing(files: Files) -> None:
    buffer = PartBuffer(memory_limit=0)
    await buffer.append(b"")
    assert await buffer.seal() == b""
    buffer.close()
    assert files.created == []


async def test_batches_are_about_a_mebibyte_one_at_a_time_off_the_loop(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = PwritevSpy(monkeypatch)
    buffer = PartBuffer(memory_limit=MiB)
    data = os.urandom(5 * MiB + 100)
    for i in range(0, len(data), 64 * KiB):
        await buffer.append(data[i : i + 64 * KiB])
    assert sealed_bytes(await buffer.seal()) == data
    buffer.close()
    # The first spill is the limit plus the piece past it; then 1 MiB batches, then the rest.
    assert spy.sizes[0] == MiB + 64 * KiB
    assert all(size == MiB for size in spy.sizes[1:-1])
    assert sum(spy.sizes) == len(data)
    assert spy.peak == 1
    assert not spy.on_the_loop


async def test_close_before_seal_closes_the_file(files: Files) -> None:
    buffer = PartBuffer(memory_limit=10)
    await buffer.append(b"x" * 100)
    await buffer.append(b"y" * 100)
    buffer.close()
    buffer.close()  # idempotent
    # The last write may still be running: the file is closed once it ends.
    for _ in range(100):
        if files.created[0].closed:
            break
        await asyncio.sleep(0.01)
    assert files.created[0].closed
    with pytest.raises(RuntimeError):
        await buffer.append(b"z")


@pytest.mark.parametrize("blocked_write", [1, 2], ids=["spill", "later-batch"])
async def test_cancelled_write_closes_the_file_only_after_the_thread(
    blocked_write: int, files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    entered = threading.Event()
    release = threading.Event()
    outcomes: list[BaseException | int] = []

    def pwritev(fd: int, buffers: Any, position: int) -> int:
        if len(outcomes) + 1 == blocked_write:
            entered.set()
            release.wait(10)
        try:
            written = real_pwritev(fd, buffers, position)
        except BaseException as exc:  # EBADF if the fd were closed under us
            outcomes.append(exc)
            raise
        outcomes.append(written)
        return written

    monkeypatch.setattr(os, "pwritev", pwritev)
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))

    buffer = PartBuffer(memory_limit=0)

    async def fill() -> None:
        await buffer.append(b"a" * 1000)  # the spill: create + write in a thread
        await buffer.append(b"b" * 1000)  # waits for the spill, then writes in a thread
        await buffer.append(b"c" * 1000)  # waits for that write

    task = asyncio.create_task(fill())
    await asyncio.to_thread(entered.wait, 10)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    buffer.close()
    assert len(files.created) == 1
    file = files.created[0]
    assert not file.closed  # the thread still holds the descriptor
    release.set()
    for _ in range(200):
        if file.closed:
            break
        await asyncio.sleep(0.01)
    assert file.closed
    assert outcomes == [1000] * blocked_write
    assert loop_errors == []


async def test_a_file_created_for_a_cancelled_spill_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = tempfile.TemporaryFile
    entered = threading.Event()
    release = threading.Event()
    created: list[BinaryIO] = []

    def temporary_file(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        file = real(*args, **kwargs)
        created.append(file)
        return file

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    buffer = PartBuffer(memory_limit=0)
    task = asyncio.create_task(buffer.append(b"x"))
    await asyncio.to_thread(entered.wait, 10)
    await cancel_then_release(task, buffer, release)
    await first_file_closed(created)


async def test_cancelled_seal_is_clean_too(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwritev = os.pwritev
    release = threading.Event()
    outcomes: list[BaseException | int] = []

    def pwritev(fd: int, buffers: Any, position: int) -> int:
        release.wait(10)
        try:
            written = real_pwritev(fd, buffers, position)
        except BaseException as exc:
            outcomes.append(exc)
            raise
        outcomes.append(written)
        return written

    monkeypatch.setattr(os, "pwritev", pwritev)
    buffer = PartBuffer(memory_limit=10)
    await buffer.append(b"a" * 100)
    task = asyncio.create_task(buffer.seal())
    await asyncio.sleep(0.05)
    await cancel_then_release(task, buffer, release)
    await first_file_closed(files.created)
    assert files.created[0].closed
    assert outcomes == [100]


async def test_a_failed_write_is_raised_and_the_file_still_closed(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    calls = 0

    def pwritev(fd: int, buffers: Any, position: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real_pwritev(fd, buffers, position)

    monkeypatch.setattr(os, "pwritev", pwritev)
    buffer = PartBuffer(memory_limit=0)
    await buffer.append(b"a" * 10)
    await buffer.append(b"b" * 10)  # starts the failing write
    with pytest.raises(OSError, match="No space"):
        await buffer.seal()
    buffer.close()
    assert files.created[0].closed


async def test_a_failed_spill_leaves_no_file(tmp_path: Path) -> None:
    buffer = PartBuffer(memory_limit=0, spool_dir=tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        await buffer.append(b"x")  # the spill creates the file first, and fails
    buffer.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        PartBuffer(memory_limit=-1)
    with pytest.raises(ValueError, match="batch"):
        PartBuffer(memory_limit=10, batch=0)
