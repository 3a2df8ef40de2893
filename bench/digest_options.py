"""What the catalog's content digest costs, per algorithm and per way of computing it.

The catalog records a digest of every finished upload. This measures the options the
efficiency issue names, as CPU seconds per GiB of the calling thread (``thread_time``), on
the bytes in the shapes the server sees them:

- ``sha256``: hashlib (OpenSSL; with the CPU's SHA extensions where it has them), in the
  server's batches (1 MiB of 64 KiB pieces), which is what the server does today;
- ``sha256, hashed by the writer``: the same, but each batch is hashed in the thread that has
  just written it to a file, while the bytes are still in the CPU's cache;
- ``sha256, read back later``: the lazy option, the file read back from the page cache and
  hashed after the upload (what computing the digest on request or in the background costs);
- ``blake3`` (one thread, and all cores) when the ``blake3`` package is installed
  (``pip install blake3``); users would check it with ``b3sum``.

Usage: ``python -m bench.digest_options [--mib 512] [--dir DIR]``; prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PIECE = 64 * 1024
BATCH = 16  # pieces per batch: the server's 1 MiB


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _batches(total: int) -> Iterator[list[bytes]]:
    """Distinct 64 KiB pieces (no cache-friendly reuse of one buffer), 1 MiB at a time."""
    pool = [os.urandom(PIECE) for _ in range(256)]  # 16 MiB, larger than the L2/L3 slice
    count = total // PIECE
    for start in range(0, count, BATCH):
        yield [pool[(start + i) % len(pool)] for i in range(min(BATCH, count - start))]


def _timed(work: Callable[[], Any]) -> float:
    started = time.thread_time()
    work()
    return time.thread_time() - started


def hash_batches(make: Callable[[], Any], total: int) -> float:
    hasher = make()

    def work() -> None:
        for batch in _batches(total):
            for piece in batch:
                hasher.update(piece)

    return _timed(work)


def write_file(path: Path, total: int, hasher: Any = None) -> float:
    """Write the batches to ``path``; with ``hasher``, hash each batch right after."""

    def work() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            position = 0
            for batch in _batches(total):
                position += os.pwritev(fd, batch, position)
                for piece in batch if hasher is not None else ():
                    hasher.update(piece)
        finally:
            os.close(fd)

    return _timed(work)


def read_back(path: Path) -> float:
    def work() -> None:
        with path.open("rb") as file:
            hashlib.file_digest(file, "sha256")

    return _timed(work)


def _blake3_rows(total: int) -> list[tuple[str, float]]:
    try:
        import blake3  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return [("blake3: not installed (pip install blake3)", float("nan"))]
    one = hash_batches(lambda: blake3.blake3(), total)
    threaded = hash_batches(lambda: blake3.blake3(max_threads=blake3.blake3.AUTO), total)
    return [("blake3, one thread", one), ("blake3, all cores (CPU of the caller only)", threaded)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=None, help="where the test file goes")
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    gib = total / (1 << 30)
    flags = _cpu_flags()
    rows: list[tuple[str, float]] = []
    rows.append(("sha256 (hashlib, in 1 MiB batches)", hash_batches(hashlib.sha256, total)))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "upload.bin"
        written = write_file(path, total)
        both = write_file(path, total, hashlib.sha256())
        rows.append(("sha256, hashed by the writer (write+hash minus write)", both - written))
        rows.append(("sha256, read back later from the page cache", read_back(path)))
    rows.append(("md5 (for scale)", hash_batches(hashlib.md5, total)))
    rows.extend(_blake3_rows(total))
    print(f"{args.mib} MiB; CPU SHA extensions: {'sha_ni' in flags}; AVX2: {'avx2' in flags}")
    print(f"| {'option':<56} | CPU s/GiB |")
    print(f"| {'-' * 56} | --------: |")
    for name, seconds in rows:
        print(f"| {name:<56} | {seconds / gib:9.2f} |")


if __name__ == "__main__":
    main()
