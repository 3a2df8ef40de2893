"""The disk's limit: the scenario's bytes written and fdatasync'ed by a minimal program.

Run as its own process (``python -m bench.durable --dir D --uploads N --size S --chunk C
--concurrency K``) in the directory the servers keep their data in, so it measures the same
filesystem. Each upload is one new file; each chunk (what one PATCH carries) is written in
1 MiB slices and then ``fdatasync``'ed, the point at which a durable tus server may acknowledge
the offset; K threads work at once, as K clients would. After each slice it starts the
slice's writeback (``sync_file_range``, as tusserver's local store does), so the disk works
while bytes still arrive and the final sync finds little left. No HTTP, no hashing, no state:
what the disk can durably take, which a server that syncs before it answers cannot beat (one
that does not sync can, by answering from the page cache). Prints one JSON line: wall
seconds, the latency of each chunk's write and sync, CPU seconds (all threads) and peak RSS.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

SLICE = 1 << 20
PAYLOAD = 16 << 20
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range, do not wait for it


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (the os module lacks it); None where there is none."""
    try:
        func = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], func)


SYNC_FILE_RANGE = _sync_file_range()


def chunks(size: int, chunk: int) -> list[int]:
    """The lengths of the requests one upload of ``size`` is cut into (the last may be short)."""
    step = max(1, min(chunk, size))
    return [min(step, size - start) for start in range(0, size, step)] or [0]


def write_upload(path: Path, size: int, chunk: int, payload: memoryview) -> list[float]:
    """One upload into a new file, each chunk synced; the seconds each chunk took."""
    latencies = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        pos = 0
        for length in chunks(size, chunk):
            started = time.perf_counter()
            end = pos + length
            while pos < end:
                take = min(SLICE, end - pos)
                start = pos % len(payload)
                take = min(take, len(payload) - start)
                written = os.write(fd, payload[start : start + take])
                if SYNC_FILE_RANGE is not None:
                    SYNC_FILE_RANGE(fd, pos, written, _SYNC_FILE_RANGE_WRITE)
                pos += written
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return latencies


def run(
    directory: Path, uploads: int, size: int, chunk: int, concurrency: int
) -> dict[str, float | list[float] | int]:
    payload = memoryview(os.urandom(PAYLOAD))
    latencies: list[float] = []
    todo = iter(range(uploads))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(todo, None)
            if index is None:
                return
            done = write_upload(directory / f"upload-{index}.bin", size, chunk, payload)
            with lock:
                latencies.extend(done)

    threads = [threading.Thread(target=worker) for _ in range(max(1, min(concurrency, uploads)))]
    # CPU of the work alone: not the interpreter's start nor making the payload.
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": wall,
        "latencies": latencies,
        "cpu": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime,
        "peak_rss": usage.ru_maxrss * 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="durable writes of a scenario's bytes (limit)")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--uploads", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    result = run(args.dir, args.uploads, args.size, args.chunk, args.concurrency)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
