"""tusserver.core.fsutil: the write-back hint on a real file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tusserver.core import fsutil


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")
def test_sync_file_range_is_found_on_linux() -> None:
    assert fsutil._sync_file_range is not None


def test_start_writeback_leaves_the_bytes_as_written(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, 0)
        fsutil.start_writeback(fd, 0, len(data))
        fsutil.start_writeback(fd, len(data), 0)  # an empty range is nothing to do
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_start_writeback_on_a_bad_descriptor_is_only_a_hint() -> None:
    # The hint's failure must never fail a write: the fdatasync after it is the promise.
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    fsutil.start_writeback(write_end, 0, 10)


def test_concurrent_dir_fsyncs_share_work_and_all_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 32 threads each create an entry and ask for a directory fsync. Every call must return
    # after an fsync that began after it was called; concurrent calls share fsyncs.
    import threading
    import time

    calls: list[tuple[float, float]] = []
    real = fsutil._fsync_dir_now

    def slow_fsync(path: Path) -> None:
        start = time.monotonic()
        time.sleep(0.01)
        real(path)
        calls.append((start, time.monotonic()))

    monkeypatch.setattr(fsutil, "_fsync_dir_now", slow_fsync)
    covered: list[bool] = []

    def worker(n: int) -> None:
        (tmp_path / f"f{n}").write_bytes(b"x")
        asked = time.monotonic()
        fsutil.fsync_dir(tmp_path)
        covered.append(any(start >= asked for start, _ in calls))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert covered == [True] * 32
    assert len(calls) < 32


def test_a_failed_dir_fsync_raises_and_the_next_call_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = [True]
    real = fsutil._fsync_dir_now

    def flaky(path: Path) -> None:
        if failing.pop() if failing else False:
            raise OSError(5, "EIO")
        real(path)

    monkeypatch.setattr(fsutil, "_fsync_dir_now", flaky)
    with pytest.raises(OSError, match="EIO"):
        fsutil.fsync_dir(tmp_path)
    fsutil.fsync_dir(tmp_path)


def test_the_group_commit_table_forgets_a_directory_once_idle(tmp_path: Path) -> None:
    # Direct uploads put their parts in a directory each: a table keeping every directory
    # ever synced would grow by one entry per upload for the life of the process.
    for n in range(50):
        directory = tmp_path / str(n)
        directory.mkdir()
        fsutil.fsync_dir(directory)
    assert not [key for key in fsutil._dir_syncs if key.startswith(str(tmp_path))]


def test_a_file_deleted_after_the_listing_has_no_mtime_instead_of_an_error(
    tmp_path: Path,
) -> None:
    """The sweeper's orphan pass listed the data dir, a DELETE removed one upload's file
    before its stat, and the whole pass failed (seen in ``make bench``): a vanished entry
    now reads as None, the others as their times."""
    (tmp_path / "gone.bin").write_bytes(b"x")
    (tmp_path / "kept.bin").write_bytes(b"y")
    with os.scandir(tmp_path) as listing:
        entries = {entry.name: entry for entry in listing}
    (tmp_path / "gone.bin").unlink()
    assert fsutil.mtime_or_none(entries["gone.bin"]) is None
    assert fsutil.mtime_or_none(entries["kept.bin"]) == (tmp_path / "kept.bin").stat().st_mtime
