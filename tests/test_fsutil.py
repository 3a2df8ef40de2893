"""tusserver.fsutil: the write-back hint on a real file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tusserver import fsutil


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
