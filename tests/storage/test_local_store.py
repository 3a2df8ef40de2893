"""Local-disk behaviours the contract suites cannot see: file layout, id validation, the
double-buffered write path and its durability ordering, fd hygiene, and crash safety."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import os
import signal
import stat
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.iospy import PwritevSpy
from tusserver import errors
from tusserver.models import ConcatKind, UploadInfo
from tusserver.state import slots
from tusserver.state.base import AlreadyExists
from tusserver.state.local import LocalStateStore
from tusserver.storage.local import LocalStore

KiB = 1024
MiB = 1024 * KiB
REPO = Path(__file__).resolve().parents[2]


def make_info(**fields: Any) -> UploadInfo:
    fields.setdefault("length", None)
    return UploadInfo(id=uuid.uuid4().hex, **fields)


def pattern(start: int, size: int) -> bytes:
    base = bytes(range(251))
    reps = (start % 251 + size) // 251 + 1
    return (base * reps)[start % 251 : start % 251 + size]


async def feed(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def tree(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


async def read_all(store: LocalStore, info: UploadInfo, start: int, end: int) -> bytes:
    return b"".join([piece async for piece in store.read(info, start, end)])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


# -- layout and ids -------------------------------------------------------------------------


async def test_layout_bin_and_json_side_by_side(root: Path) -> None:
    store, state = LocalStore(root), LocalStateStore(root)
    info = make_info(length=5, metadata={"name": "x"})
    await store.create(info)
    await state.create(info)
    assert await store.write(info, feed([b"hello"])) == 5
    assert (root / f"{info.id}.bin").read_bytes() == b"hello"
    record = slots.parse((root / f"{info.id}.json").read_bytes())
    assert json.loads(record.payload) == info.to_dict()
    await state.update(info.replace(offset=5))
    assert names(root) == [f"{info.id}.bin", f"{info.id}.json"]
    for name in (f"{info.id}.bin", f"{info.id}.json"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600


def test_roots_are_created(tmp_path: Path) -> None:
    LocalStore(tmp_path / "a" / "b")
    LocalStateStore(tmp_path / "c" / "d")
    assert (tmp_path / "a" / "b").is_dir()
    assert (tmp_path / "c" / "d").is_dir()


BAD_IDS = [
    "../" + "a" * 29,
    "../../../../etc/passwd",
    "%2e%2e%2f" + "a" * 23,
    "a" * 31 + "\0",
    "a" * 16 + "\0" + "a" * 15,
    "A" * 32,
    "a" * 31,
    "a" * 33,
    "a" * 32 + "\n",
    "/" + "a" * 31,
    "a" * 15 + "/" + "a" * 16,
    "g" * 32,
    "",
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_refused_before_touching_disk(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "data"
    store, state = LocalStore(root), LocalStateStore(root)
    good = make_info(length=10)
    await store.create(good)
    await state.create(good)
    before = tree(tmp_path)
    info = UploadInfo(id=bad, length=10)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.create(info),
        lambda: store.write(info, feed([b"x"])),
        lambda: store.finish(info),
        lambda: store.terminate(info),
        lambda: store.declare_length(info),
        lambda: store.concat(info, [good]),
        lambda: store.concat(good, [info]),
        lambda: read_all(store, info, 0, 1),
        lambda: store.truncate(info, 0),
        lambda: store.reconcile(info),
        lambda: state.create(info),
        lambda: state.get(bad),
        lambda: state.update(info),
        lambda: state.delete(bad),
        lambda: state.add_waiter(bad, good.id),
        lambda: state.add_waiter(good.id, bad),
        lambda: state.waiters(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid upload id"):
            await call()
    # Nothing appeared anywhere under tmp_path, including beside the root.
    assert tree(tmp_path) == before
    assert [i async for i in state.expired(time.time() + 10**9)] == []


# -- the write path ---------------------------------------------------------------------------


async def test_create_is_exclusive(root: Path) -> None:
    store = LocalStore(root)
    info = make_info()
    await store.create(info)
    with pytest.raises(FileExistsError):
        await store.create(info)


async def test_write_to_a_missing_file_creates_nothing(root: Path) -> None:
    store = LocalStore(root)
    info = make_info()
    with pytest.raises(FileNotFoundError):
        await store.write(info, feed([b"data"]))
    assert names(root) == []


async def test_writes_are_batched_in_threads_one_at_a_time(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = PwritevSpy(monkeypatch, delay=0.002)
    store = LocalStore(root, write_buffer=1 * MiB, checkpoint_interval=3600)
    info = await store.create(make_info())
    data = os.urandom(4 * MiB + 100)
    assert await store.write(info, feed(split(data, 64 * KiB))) == len(data)
    assert (root / f"{info.id}.bin").read_bytes() == data
    # One pwritev per full buffer plus the tail, never one per chunk, never on the loop.
    assert spy.sizes == [MiB, MiB, MiB, MiB, 100]
    assert spy.peak == 1
    assert not spy.on_the_loop


async def test_a_big_chunk_is_written_as_is(root: Path) -> None:
    store = LocalStore(root, write_buffer=64 * KiB)
    info = await store.create(make_info())
    parts = [b"a" * 10, os.urandom(MiB), b"b" * 10, os.urandom(300 * KiB)]
    assert await store.write(info, feed(parts)) == sum(map(len, parts))
    assert (root / f"{info.id}.bin").read_bytes() == b"".join(parts)


async def test_short_pwrites_are_continued(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite = os.pwrite

    def short(fd: int, buffers: Any, position: int) -> int:
        # At most 777 bytes, and never more than the first buffer: partial buffers too.
        return real_pwrite(fd, memoryview(buffers[0])[:777], position)

    monkeypatch.setattr(os, "pwritev", short)
    store = LocalStore(root, write_buffer=64 * KiB)
    info = await store.create(make_info())
    data = os.urandom(200 * KiB + 3)
    assert await store.write(info, feed(split(data, 10_000))) == len(data)
    assert (root / f"{info.id}.bin").read_bytes() == data


async def test_progress_never_runs_ahead_of_fdatasync(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdatasync = os.fdatasync
    synced = [0]

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    store = LocalStore(root, write_buffer=128 * KiB, checkpoint_interval=0.0)
    info = await store.create(make_info())
    info = info.replace(offset=(await store.write(info, feed([b"x" * 1000]))))
    progress: list[int] = []

    async def record(offset: int) -> None:
        assert offset <= max(synced), "reported bytes that were not fdatasync'ed"
        progress.append(offset)

    data = os.urandom(3 * MiB)
    assert await store.write(info, feed(split(data, 64 * KiB)), record) == len(data)
    assert len(progress) > 5
    assert progress == sorted(set(progress))
    assert all(1000 < offset <= 1000 + len(data) for offset in progress)


async def test_checkpoints_follow_the_clock(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = 0
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    now = 100.0
    store = LocalStore(root, write_buffer=64 * KiB, checkpoint_interval=1.0, clock=lambda: now)
    info = await store.create(make_info())
    progress: list[int] = []

    async def record(offset: int) -> None:
        progress.append(offset)

    # The clock stands still: many batches, no checkpoint, one final fdatasync.
    stored = await store.write(info, feed(split(os.urandom(MiB), 16 * KiB)), record)
    assert (stored, progress, syncs) == (MiB, [], 1)
    info = info.replace(offset=stored)

    async def slow_client() -> AsyncIterator[bytes]:
        nonlocal now
        for _ in range(5):
            now += 2.0  # every chunk arrives a checkpoint interval after the last
            yield b"z" * 1000
            await asyncio.sleep(0.05)  # lets the worker thread finish the batch

    syncs = 0
    assert await store.write(info, slow_client(), record) == 5000
    # Each small chunk became durable and was reported as soon as the next one came, without
    # waiting for a full buffer; the last is covered by the final fdatasync and return value.
    assert progress == [MiB + 1000, MiB + 2000, MiB + 3000, MiB + 4000]
    assert syncs == 6


async def test_failing_iterator_closes_the_fd_and_reports_nothing_after(
    root: Path,
) -> None:
    store = LocalStore(root, write_buffer=64 * KiB, checkpoint_interval=0.0)
    info = await store.create(make_info())
    baseline = open_fds()
    failed = False
    late: list[int] = []

    async def broken() -> AsyncIterator[bytes]:
        nonlocal failed
        for i in range(10):
            yield pattern(i * 64 * KiB, 64 * KiB)
        failed = True
        raise ConnectionResetError("gone")

    async def record(offset: int) -> None:
        if failed:
            late.append(offset)

    with pytest.raises(ConnectionResetError):
        await store.write(info, broken(), record)
    assert late == []
    assert open_fds() == baseline


async def test_cancellation_waits_for_the_thread_before_closing_the_fd(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    started = threading.Event()
    errors: list[BaseException] = []

    def slow_pwritev(fd: int, buffers: Any, position: int) -> int:
        started.set()
        time.sleep(0.3)
        try:
            return real_pwritev(fd, buffers, position)
        except OSError as exc:  # EBADF if the fd had been closed under us
            errors.append(exc)
            raise

    monkeypatch.setattr(os, "pwritev", slow_pwritev)
    store = LocalStore(root, write_buffer=64 * KiB)
    info = await store.create(make_info())
    baseline = open_fds()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"q" * (64 * KiB)
            await asyncio.sleep(0)

    task = asyncio.create_task(store.write(info, endless()))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert errors == []
    assert open_fds() == baseline


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.calls: list[str] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


async def test_a_body_within_one_batch_is_written_in_one_thread_call(root: Path) -> None:
    store = LocalStore(root, write_buffer=64 * KiB)
    info = await store.create(make_info())
    assert await store.write(info, feed([b"a" * 100])) == 100
    baseline = open_fds()
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    # Open, write, cut off what an earlier longer write left, fdatasync, close: one call.
    assert await store.write(info, feed([b"bb", b"b" * 8])) == 10
    assert executor.calls == ["_write_whole"]
    assert (root / f"{info.id}.bin").read_bytes() == b"b" * 10
    assert open_fds() == baseline
    # A body past one batch still opens the file once and writes batch by batch.
    executor.calls.clear()
    data = os.urandom(200 * KiB)
    assert await store.write(info, feed(split(data, 50 * KiB))) == len(data)
    assert executor.calls == ["open", "_write_batch", "_write_batch", "_write_last_batch"]
    assert (root / f"{info.id}.bin").read_bytes() == data
    assert open_fds() == baseline


async def test_cancelling_a_one_call_write_waits_for_the_thread(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    started, finished = threading.Event(), threading.Event()

    def slow_pwritev(fd: int, buffers: Any, position: int) -> int:
        started.set()
        time.sleep(0.3)
        written = real_pwritev(fd, buffers, position)
        finished.set()
        return written

    monkeypatch.setattr(os, "pwritev", slow_pwritev)
    store = LocalStore(root, write_buffer=64 * KiB)
    info = await store.create(make_info())
    baseline = open_fds()
    task = asyncio.create_task(store.write(info, feed([b"small"])))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Not returned while the thread still wrote: the next request on this upload would
    # race with it.
    assert finished.is_set()
    assert open_fds() == baseline


async def test_read_stops_at_the_end_of_the_file(root: Path) -> None:
    store = LocalStore(root)
    info = await store.create(make_info())
    data = os.urandom(2 * MiB + 5)
    await store.write(info, feed([data]))
    assert await read_all(store, info, 0, 10 * MiB) == data
    pieces = [len(p) async for p in store.read(info, 5, 2 * MiB + 5)]
    assert pieces == [MiB, MiB]


async def test_an_abandoned_read_closes_its_fd(root: Path) -> None:
    store = LocalStore(root)
    info = await store.create(make_info())
    await store.write(info, feed([os.urandom(3 * MiB)]))
    baseline = open_fds()
    reader = store.read(info, 0, 3 * MiB)
    assert len(await anext(reader)) == MiB
    await reader.aclose()
    assert open_fds() == baseline


# -- concat -----------------------------------------------------------------------------------


async def _partials(store: LocalStore, sizes: Iterable[int]) -> list[UploadInfo]:
    partials = []
    position = 0
    for size in sizes:
        info = await store.create(make_info(length=size, concat=ConcatKind.PARTIAL))
        await store.write(info, feed([pattern(position, size)]))
        partials.append(info.replace(offset=size))
        position += size
    return partials


@pytest.mark.parametrize("mode", ["kernel", "exdev", "absent"])
async def test_concat_copy_paths(root: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    if mode == "exdev":

        def refuse(*args: Any) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    elif mode == "absent":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    store = LocalStore(root)
    partials = await _partials(store, [3 * MiB + 7, 0, 12345])
    final = make_info(length=3 * MiB + 7 + 12345, concat=ConcatKind.FINAL)
    # No create(): concat makes the file. A stale longer file would be cut to size.
    (root / f"{final.id}.bin").write_bytes(b"#" * (4 * MiB))
    await store.concat(final, partials)
    assert (root / f"{final.id}.bin").read_bytes() == pattern(0, 3 * MiB + 7 + 12345)


async def test_concat_switches_to_the_fallback_midway(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.copy_file_range
    calls = 0

    def flaky(src: int, dst: int, count: int, offset_src: Any, offset_dst: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSYS, "gone")
        return real(src, dst, min(count, 1000), offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", flaky)
    store = LocalStore(root)
    partials = await _partials(store, [5000, 3000])
    final = make_info(length=8000, concat=ConcatKind.FINAL)
    await store.concat(final, partials)
    assert (root / f"{final.id}.bin").read_bytes() == pattern(0, 8000)


@pytest.mark.parametrize(
    ("code", "raised"), [(errno.EIO, OSError), (errno.ENOSPC, errors.InsufficientStorage)]
)
async def test_concat_raises_real_io_errors(
    root: Path, monkeypatch: pytest.MonkeyPatch, code: int, raised: type[Exception]
) -> None:
    def failing(*args: Any) -> int:
        raise OSError(code, "real error")

    monkeypatch.setattr(os, "copy_file_range", failing)
    store = LocalStore(root)
    partials = await _partials(store, [100])
    with pytest.raises(raised):
        await store.concat(make_info(length=100), partials)


async def test_concat_refuses_short_or_unsized_partials(root: Path) -> None:
    store = LocalStore(root)
    (partial,) = await _partials(store, [100])
    with pytest.raises(EOFError):
        await store.concat(make_info(), [partial.replace(length=200)])
    with pytest.raises(ValueError, match="no length"):
        await store.concat(make_info(), [partial.replace(length=None)])


# -- reconcile --------------------------------------------------------------------------------


async def test_reconcile_logs_what_it_lowered(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(root)
    info = await store.create(make_info(length=100))
    await store.write(info, feed([b"x" * 30]))
    with caplog.at_level(logging.WARNING, logger="tusserver.storage"):
        fixed = await store.reconcile(info.replace(offset=80))
    assert fixed.offset == 30
    (record,) = [r for r in caplog.records if r.getMessage() == "storage.offset_reconciled"]
    assert record.upload_id == info.id  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    # A vanished file holds nothing.
    (root / f"{info.id}.bin").unlink()
    assert (await store.reconcile(info.replace(offset=80))).offset == 0


# -- local state --------------------------------------------------------------------------------


BAD_CRC = slots.encode_file(b'{"id": "x"}').replace(b'"x"', b'"y"')


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"id": "',
        b"[1, 2]",
        b"\xff\xfe",
        b'{"length": 5}',
        b"",
        BAD_CRC,
        slots.encode_file(b"{}")[:1500],
        slots.encode_file(b"[1, 2]"),
    ],
)
async def test_corrupt_state_reads_as_missing(
    root: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    state = LocalStateStore(root)
    upload_id = uuid.uuid4().hex
    (root / f"{upload_id}.json").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="tusserver.state"):
        assert await state.get(upload_id) is None
    (record,) = [r for r in caplog.records if r.getMessage() == "state.corrupt"]
    assert record.upload_id == upload_id  # type: ignore[attr-defined]


async def test_a_record_under_the_wrong_name_is_corrupt(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info()
    other = uuid.uuid4().hex
    (root / f"{other}.json").write_text(json.dumps(info.to_dict()))
    assert await state.get(other) is None


async def test_expired_skips_everything_but_records(root: Path) -> None:
    state = LocalStateStore(root)
    old = make_info(length=10, expires_at=1.0)
    await state.create(old)
    await state.add_waiter(old.id, uuid.uuid4().hex)
    corrupt = uuid.uuid4().hex
    (root / f"{corrupt}.json").write_text("{")
    (root / f".{old.id}.abc123.tmp").write_text(json.dumps(old.to_dict()))
    (root / "notes.json").write_text(json.dumps(old.to_dict()))
    (root / f"{old.id.upper()}.json").write_text(json.dumps(old.to_dict()))
    (root / f"{uuid.uuid4().hex}.bin").write_bytes(b"bytes")
    (root / "sub.json").mkdir()
    assert [i.id async for i in state.expired(2.0)] == [old.id]


async def test_updates_rewrite_the_record_in_place(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info()
    await state.create(info)
    path = root / f"{info.id}.json"
    before = path.stat()
    for offset in range(1, 41):
        await state.update(info.replace(offset=offset))
        assert await state.get(info.id) == info.replace(offset=offset)
    after = path.stat()
    # No inode is created or freed per update, and no temporary file is left.
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert names(root) == [f"{info.id}.json"]
    assert slots.parse(path.read_bytes()).seq == 41


async def test_a_torn_newest_slot_falls_back_to_the_previous_record(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info()
    await state.create(info)
    await state.update(info.replace(offset=1))
    await state.update(info.replace(offset=2))
    path = root / f"{info.id}.json"
    raw = bytearray(path.read_bytes())
    newest = slots.parse(bytes(raw))
    start = newest.index * newest.slot_size
    # A crash mid-write leaves the slot half old, half new: its CRC fails.
    raw[start + slots.HEADER_SIZE + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert await state.get(info.id) == info.replace(offset=1)
    # The next update goes to the torn slot, over the record it could not read.
    await state.update(info.replace(offset=3))
    assert await state.get(info.id) == info.replace(offset=3)
    assert slots.parse(path.read_bytes()).seq == 3


async def test_bare_json_records_of_earlier_versions_are_read_and_upgraded(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info(length=10)
    path = root / f"{info.id}.json"
    path.write_text(json.dumps(info.to_dict()))
    assert await state.get(info.id) == info
    await state.update(info.replace(offset=4))
    assert slots.is_slotted(path.read_bytes())
    assert await state.get(info.id) == info.replace(offset=4)
    assert names(root) == [f"{info.id}.json"]


async def test_a_record_that_outgrows_its_slots_is_rewritten_larger(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info()
    await state.create(info)
    path = root / f"{info.id}.json"
    small = path.stat()
    grown = info.replace(metadata={"notes": "x" * 5000}, offset=1)
    await state.update(grown)
    big = path.stat()
    assert big.st_size > small.st_size
    assert big.st_ino != small.st_ino
    assert await state.get(info.id) == grown
    await state.update(grown.replace(offset=2))
    assert path.stat().st_ino == big.st_ino
    assert await state.get(info.id) == grown.replace(offset=2)
    assert slots.parse(path.read_bytes()).seq == 3
    assert names(root) == [f"{info.id}.json"]


async def test_a_failed_update_keeps_the_previous_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = LocalStateStore(root)
    info = make_info()
    await state.create(info)
    await state.update(info.replace(offset=19))

    def disk_gone(*args: Any) -> None:
        raise OSError(errno.EIO, "disk gone")

    # In place: the spare slot cannot be written.
    with monkeypatch.context() as patched:
        patched.setattr(os, "pwritev", disk_gone)
        with pytest.raises(OSError, match="disk gone"):
            await state.update(info.replace(offset=99))
    assert await state.get(info.id) == info.replace(offset=19)
    # Rewritten whole (the record outgrew its slots): the new file is never put in place.
    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", disk_gone)
        with pytest.raises(OSError, match="disk gone"):
            await state.update(info.replace(offset=99, metadata={"notes": "x" * 5000}))
    assert await state.get(info.id) == info.replace(offset=19)
    assert names(root) == [f"{info.id}.json"]


async def test_concurrent_updates_leave_one_whole_record(root: Path) -> None:
    # The upload lock keeps writers of one record apart; the file lock must hold even
    # without it, across in-place writes and whole-file rewrites racing each other.
    state = LocalStateStore(root)
    info = make_info()
    await state.create(info)
    wanted = [
        info.replace(offset=n, metadata={"notes": "x" * (n * 300)} if n % 5 == 0 else {})
        for n in range(1, 31)
    ]
    await asyncio.gather(*(state.update(w) for w in wanted))
    assert await state.get(info.id) in wanted
    assert names(root) == [f"{info.id}.json"]


async def test_an_update_of_a_missing_record_creates_it_as_a_rename_did(root: Path) -> None:
    state = LocalStateStore(root)
    info = make_info()
    await state.update(info.replace(offset=3))
    assert await state.get(info.id) == info.replace(offset=3)


async def test_concurrent_creates_of_one_id_have_one_winner(root: Path) -> None:
    state = LocalStateStore(root)
    infos = [make_info().replace(offset=i) for i in range(10)]
    infos = [info.replace(id=infos[0].id) for info in infos]
    results = await asyncio.gather(*(state.create(i) for i in infos), return_exceptions=True)
    winners = [info for info, result in zip(infos, results, strict=True) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
    assert await state.get(infos[0].id) == winners[0]
    assert names(root) == [f"{infos[0].id}.json"]


async def test_a_torn_waiter_line_is_skipped(root: Path) -> None:
    state = LocalStateStore(root)
    partial, final = uuid.uuid4().hex, uuid.uuid4().hex
    await state.add_waiter(partial, final)
    with (root / f"{partial}.waiters").open("ab") as file:
        file.write(b"0123abc")  # a crash mid-append
    assert await state.waiters(partial) == [final]


# -- crash safety -------------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pathlib import Path
    from tusserver.models import UploadInfo
    from tusserver.state.local import LocalStateStore
    from tusserver.storage.local import LocalStore

    root, upload_id = Path(sys.argv[1]), sys.argv[2]
    CHUNK = 64 * 1024
    BASE = bytes(range(251)) * (CHUNK // 251 + 2)

    # A slow disk widens the window in which a wrongly ordered report would be visible.
    real_pwritev = os.pwritev
    def slow_pwritev(fd, buffers, position):
        time.sleep(0.01)
        return real_pwritev(fd, buffers, position)
    os.pwritev = slow_pwritev

    async def main():
        store = LocalStore(root, write_buffer=256 * 1024, checkpoint_interval=0.02)
        state = LocalStateStore(root)
        info = await store.create(UploadInfo(id=upload_id, length=None))
        await state.create(info)

        async def endless():
            position = 0
            while True:
                start = position % 251
                yield BASE[start : start + CHUNK]
                position += CHUNK
                await asyncio.sleep(0.0005)

        async def record(offset):
            await state.update(info.replace(offset=offset))
            print(offset, flush=True)

        await store.write(info, endless(), record)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("checkpoints", [2, 12])
async def test_sigkill_mid_write_never_leaves_an_offset_beyond_the_bytes(
    root: Path, checkpoints: int
) -> None:
    upload_id = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_SCRIPT,
        str(root),
        upload_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        reported: list[int] = []
        while len(reported) < checkpoints:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            if not line:
                _, err = await proc.communicate()
                pytest.fail(f"writer exited early: {err.decode()}")
            reported.append(int(line))
    finally:
        # Exactly one signal: a second one makes Popen reap the child itself, racing asyncio's
        # child watcher (which would then report returncode 255).
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()

    info = await LocalStateStore(root).get(upload_id)
    assert info is not None
    data = (root / f"{upload_id}.bin").read_bytes()
    assert reported[-1] <= info.offset <= len(data)
    assert data[: info.offset] == pattern(0, info.offset)
    # What a restarted server does: reconcile finds nothing to lower.
    assert await LocalStore(root).reconcile(info) == info
