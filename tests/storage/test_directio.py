"""O_DIRECT writes of large batches (``tusserver.storage.directio``), on the real file system.

Every test checks the file's bytes against what was sent; the spies only watch which system
calls ran (they still run).
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tusserver.models import UploadInfo
from tusserver.storage import directio
from tusserver.storage.local import LocalStore

KiB, MiB = 1024, 1024 * 1024
ALIGN = directio.ALIGN


class Opens:
    """Records the flags of every os.open; can refuse O_DIRECT like tmpfs does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, refuse: bool = False) -> None:
        self.direct = 0
        self._real = os.open
        self._refuse = refuse
        monkeypatch.setattr(os, "open", self._open)

    def _open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & directio._O_DIRECT:
            self.direct += 1
            if self._refuse:
                raise OSError(errno.EINVAL, "Invalid argument")
        return self._real(path, flags, *args, **kwargs)


@pytest.fixture(autouse=True)
def fresh_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    # A refusal is remembered per device for the process; each test starts without any.
    monkeypatch.setattr(directio, "_refused", set())


@pytest.fixture
def target(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "f.bin", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def split(data: bytes, rng: random.Random) -> list[bytes]:
    pieces, position = [], 0
    while position < len(data):
        size = rng.choice([1, 100, 4096, 65_536, 200_000, 1_500_000])
        pieces.append(data[position : position + size])
        position += size
    return pieces


def contents(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size, 0)


needs_direct = pytest.mark.skipif(not directio._O_DIRECT, reason="no O_DIRECT here")


@needs_direct
@pytest.mark.parametrize("seed", range(8))
def test_any_position_and_split_lands_exactly(
    target: int, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    opens = Opens(monkeypatch)
    expected = bytearray()
    position = 0
    for _ in range(4):
        # Unaligned starts and ends, middles shorter and longer than one scratch buffer.
        size = rng.choice([300 * KiB, MiB - 1, 2 * MiB + 12_345, 3 * MiB])
        data = rng.randbytes(size)
        directio.pwrite_batch(target, split(data, rng), position)
        expected[position : position + size] = data
        position += size - rng.randrange(0, 5000)  # the next batch overlaps a little
    assert contents(target) == bytes(expected)
    assert opens.direct == 4, "each batch wrote its middle with O_DIRECT"


@needs_direct
def test_small_batches_stay_buffered(target: int, monkeypatch: pytest.MonkeyPatch) -> None:
    opens = Opens(monkeypatch)
    data = os.urandom(directio.MIN_DIRECT + ALIGN)
    # From offset 1, the aligned middle of all but the last 2 bytes is one block short.
    directio.pwrite_batch(target, [data[:-2]], 1)
    assert opens.direct == 0
    directio.pwrite_batch(target, [data], 1)  # and with them it is MIN_DIRECT long
    assert opens.direct == 1
    assert contents(target) == bytes(1) + data


@needs_direct
def test_direct_writes_replace_dirty_cached_bytes(target: int) -> None:
    # A retried PATCH rewrites bytes that an unacknowledged one left in the page cache.
    os.pwrite(target, b"\xee" * (2 * MiB), 0)
    data = os.urandom(2 * MiB)
    directio.pwrite_batch(target, [data], 0)
    assert contents(target) == data


def test_a_refusing_file_system_is_written_buffered_and_not_asked_again(
    target: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = Opens(monkeypatch, refuse=True)
    data = os.urandom(3 * MiB)
    directio.pwrite_batch(target, [data[: 2 * MiB]], 0)
    directio.pwrite_batch(target, [data[2 * MiB :]], 2 * MiB)
    assert contents(target) == data
    assert opens.direct <= 1


@needs_direct
@pytest.mark.parametrize("failure", ["refused", "short"])
def test_a_direct_write_that_stops_partway_is_finished_buffered(
    target: int, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    real_pwrite = os.pwrite
    direct_calls = 0

    def pwrite(fd: int, data: Any, position: int) -> int:
        nonlocal direct_calls
        if fcntl.fcntl(fd, fcntl.F_GETFL) & directio._O_DIRECT:
            direct_calls += 1
            if direct_calls == 2:
                if failure == "refused":
                    raise OSError(errno.EINVAL, "Invalid argument")
                return real_pwrite(fd, memoryview(data)[: ALIGN + 100], position)
        return real_pwrite(fd, data, position)

    monkeypatch.setattr(os, "pwrite", pwrite)
    data = os.urandom(4 * MiB + 777)
    directio.pwrite_batch(target, [data], 100)
    assert direct_calls == 2
    assert contents(target) == bytes(100) + data


def test_real_io_errors_are_raised(target: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(directio, "_O_DIRECT", directio._O_DIRECT or 0o40000)
    monkeypatch.setattr(os, "open", broken)
    with pytest.raises(OSError, match="Too many open files"):
        directio.pwrite_batch(target, [os.urandom(MiB)], 0)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_tmpfs_works_whether_or_not_it_takes_o_direct() -> None:
    fd = os.open(f"/dev/shm/tusserver-directio-{os.getpid()}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        data = os.urandom(2 * MiB + 5)
        directio.pwrite_batch(fd, [data], 3)
        assert contents(fd) == bytes(3) + data
    finally:
        os.close(fd)
        os.unlink(f"/dev/shm/tusserver-directio-{os.getpid()}")


@needs_direct
async def test_the_local_store_writes_large_bodies_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = Opens(monkeypatch)
    store = LocalStore(tmp_path, checkpoint_interval=3600)
    info = await store.create(UploadInfo(id="a" * 32, length=None))
    data = os.urandom(5 * MiB + 3)

    async def body() -> Any:
        for start in range(0, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]

    assert await store.write(info, body()) == len(data)
    assert (tmp_path / f"{info.id}.bin").read_bytes() == data
    assert opens.direct >= 4
    # Off by setting: not one O_DIRECT open.
    opens.direct = 0
    buffered = LocalStore(tmp_path, direct_io=False)
    assert await buffered.write(info.replace(offset=len(data)), body()) == len(data)
    assert opens.direct == 0
    assert (tmp_path / f"{info.id}.bin").read_bytes() == data * 2
