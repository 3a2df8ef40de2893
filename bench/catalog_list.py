"""The catalog's list queries on a large table: FileRepository.list_page and recent, timed.

For each backend, makes a fresh database (SQLite: a file in a temp dir; Postgres: a new
database on ``--postgres-url``, or on the throwaway cluster the tests start, from
``tests/services_postgres.py``), runs the real migrations, seeds N rows in bulk (one owner
holds 90% of them, 99 others share the rest; names like ``holiday-0042.mp4``; ``created_at``
spread over a year), brings the statistics up to date (SQLite ``ANALYZE`` and
``PRAGMA optimize``; Postgres ``VACUUM ANALYZE``, the state autovacuum leaves a table in) and
times each query as the big owner sees it: median and p95 of ``--runs`` runs after a warm-up.
Usage: ``python -m bench.catalog_list [--rows 100000] [--backends sqlite,postgres]
[--postgres-url postgresql+asyncpg://...] [--runs 20]``; a database it created, it drops.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from catalog.db import open_engine
from catalog.migrate import upgrade
from catalog.models import FileRecord
from catalog.repository import FileRepository, ListQuery

BATCH = 5000
WARMUP = 3
BIG_OWNER = "alice"
OTHER_OWNERS = [f"user-{n:03d}" for n in range(1, 100)]
WORDS = [
    "holiday",
    "birthday",
    "meeting",
    "lecture",
    "drone",
    "wedding",
    "screencast",
    "interview",
    "concert",
    "timelapse",
]
EXTENSIONS = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}
START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True)
class Result:
    backend: str
    query: str
    median_ms: float
    p95_ms: float
    total_count: int | None


def rows(count: int, seed: int = 42) -> Iterator[dict[str, Any]]:
    """``count`` rows as column values; 10 words x 1000 numbers, so "holiday-00" is ~1%."""
    rng = random.Random(seed)
    extensions = list(EXTENSIONS)
    for _ in range(count):
        file_id = f"{rng.getrandbits(128):032x}"
        word = rng.choice(WORDS)
        number = rng.randrange(1000)
        extension = rng.choice(extensions)
        created = START + timedelta(seconds=rng.uniform(0, YEAR_SECONDS))
        finished = created + timedelta(seconds=rng.uniform(1, 3600))
        yield {
            "id": file_id,
            "owner": BIG_OWNER if rng.random() < 0.9 else rng.choice(OTHER_OWNERS),
            "filename": f"{word}-{number:04d}.{extension}",
            "original_filename": f"{word.title()} {number:04d} (final).{extension.upper()}",
            "storage_backend": "local",
            "storage_key": f"{file_id}.bin",
            "content_type": EXTENSIONS[extension],
            "size": rng.randrange(1 << 10, 5 << 30),
            "sha256": f"{rng.getrandbits(256):064x}",
            "metadata": {"filename": f"{word}-{number:04d}.{extension}"},
            "created_at": created,
            "finished_at": finished,
            "updated_at": finished,
            "processed_at": finished,
        }


async def seed(engine: AsyncEngine, count: int) -> float:
    """Bulk insert in batches (one transaction each); the elapsed seconds."""
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for row in rows(count):
        batch.append(row)
        if len(batch) == BATCH:
            await insert_batch(engine, batch)
            batch = []
    if batch:
        await insert_batch(engine, batch)
    return time.perf_counter() - started


async def insert_batch(engine: AsyncEngine, batch: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(FileRecord), batch)


async def analyze(engine: AsyncEngine) -> None:
    if engine.dialect.name == "sqlite":
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
            await connection.execute(text("PRAGMA optimize"))
        return
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE files"))


async def timed(
    call: Callable[[], Awaitable[int | None]], runs: int
) -> tuple[float, float, int | None]:
    """(median ms, p95 ms, the call's total_count) over ``runs`` runs after a warm-up."""
    for _ in range(WARMUP):
        await call()
    samples = []
    total = None
    for _ in range(runs):
        started = time.perf_counter()
        total = await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[max(0, math.ceil(0.95 * len(samples)) - 1)]  # nearest rank
    return statistics.median(samples), p95, total


def queries(repo: FileRepository) -> list[tuple[str, Callable[[], Awaitable[int | None]]]]:
    def listing(query: ListQuery) -> Callable[[], Awaitable[int | None]]:
        async def call() -> int | None:
            page = await repo.list_page(query, owner=BIG_OWNER)
            assert len(page.items) <= query.page_size
            return page.total_count

        return call

    async def recent() -> int | None:
        assert len(await repo.recent(5, owner=BIG_OWNER)) == 5
        return None

    return [
        ("page 1 (10, created_at desc)", listing(ListQuery(page=1, page_size=10))),
        ("page 4000 (20, created_at desc)", listing(ListQuery(page=4000, page_size=20))),
        ('search "holiday-00" (~1%)', listing(ListQuery(search="holiday-00"))),
        ('search "no-such-file" (none)', listing(ListQuery(search="no-such-file"))),
        (
            "page 1 (10, filename asc)",
            listing(ListQuery(sort_by="filename", sort_order="asc")),
        ),
        ("recent(5)", recent),
    ]


async def run_backend(backend: str, url: str, count: int, runs: int) -> list[Result]:
    engine = open_engine(url)
    try:
        await upgrade(engine)
        seconds = await seed(engine, count)
        started = time.perf_counter()
        await analyze(engine)
        print(
            f"{backend}: seeded {count} rows in {seconds:.1f} s ({count / seconds:,.0f} rows/s), "
            f"statistics in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        repo = FileRepository(engine)
        results = []
        for name, call in queries(repo):
            median, p95, total = await timed(call, runs)
            results.append(Result(backend, name, median, p95, total))
        return results
    finally:
        await engine.dispose()


def postgres_url(args: argparse.Namespace) -> tuple[str, Callable[[], None]]:
    """A fresh database and how to drop it afterwards."""
    if not args.postgres_url:
        from tests.services_postgres import create_database, drop_database

        url = create_database("bench_catalog")
        return url, lambda: drop_database(url)

    # A scratch database next to the given one, on the same server: nothing existing is touched.
    base = make_url(args.postgres_url).set(drivername="postgresql+asyncpg")
    name = f"bench_catalog_{random.getrandbits(40):010x}"

    async def admin(statement: str) -> None:
        engine = open_engine(base.render_as_string(hide_password=False))
        try:
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    return url, lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--postgres-url",
        help="a Postgres server to create a scratch database on (default: a throwaway cluster)",
    )
    args = parser.parse_args()
    results: list[Result] = []
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        if backend == "sqlite":
            directory = tempfile.mkdtemp(prefix="tusbench-catalog-")
            url = f"sqlite+aiosqlite:///{directory}/catalog.db"
            cleanup: Callable[[], None] = partial(shutil.rmtree, directory, ignore_errors=True)
        elif backend == "postgres":
            url, cleanup = postgres_url(args)
        else:
            parser.error(f"unknown backend {backend!r} (sqlite, postgres)")
        try:
            results += asyncio.run(run_backend(backend, url, args.rows, args.runs))
        finally:
            cleanup()

    print(f"\n{args.rows} rows, ~90% of them one owner's, the owner every query is scoped to")
    print(f"median and p95 of {args.runs} runs after {WARMUP} warm-up runs")
    header = ("backend", "query", "median ms", "p95 ms", "total_count")
    print("| {:<8} | {:<31} | {:>9} | {:>8} | {:>11} |".format(*header))
    print(f"|{'-' * 10}|{'-' * 33}|{'-' * 11}|{'-' * 10}|{'-' * 13}|")
    for r in results:
        total = "-" if r.total_count is None else str(r.total_count)
        print(
            f"| {r.backend:<8} | {r.query:<31} | {r.median_ms:>9.2f} | {r.p95_ms:>8.2f} | "
            f"{total:>11} |"
        )


if __name__ == "__main__":
    main()
