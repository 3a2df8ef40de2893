"""Token buckets shared by workers (``security.buckets_shared``): one table, mapped by all.

Two ``SharedBuckets`` over one file stand for two workers (one table, two maps), and a
spawned process drains a bucket this one then finds drained. Checked: GCRA as in process (burst,
refill, nothing taken when refused, all keys or none), one bucket seen through both maps, a
second process draining the same bucket, and a full table admitting rather than refusing.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tusserver.security.buckets import Rate
from tusserver.security.buckets_shared import SharedBuckets

NOW = 1_700_000_000.0
RATE = Rate(per_minute=60, burst=3)  # one a second, three at once


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Callable[..., SharedBuckets]]:
    opened: list[SharedBuckets] = []

    def make(**options: int) -> SharedBuckets:
        opened.append(SharedBuckets(tmp_path / "buckets", **options))
        return opened[-1]

    yield make
    for buckets in opened:
        buckets.close()


async def test_burst_then_refill_and_refusals_take_nothing(
    table: Callable[..., SharedBuckets],
) -> None:
    buckets = table()
    for _ in range(3):
        assert await buckets.take(["ip:a"], [RATE], NOW) is None
    wait = await buckets.take(["ip:a"], [RATE], NOW)
    assert wait == pytest.approx(1.0)
    assert await buckets.take(["ip:a"], [RATE], NOW + 0.5) == pytest.approx(0.5)
    assert await buckets.take(["ip:a"], [RATE], NOW + 1.0) is None
    assert await buckets.take(["ip:b"], [RATE], NOW) is None  # another key, its own bucket


async def test_all_keys_or_none(table: Callable[..., SharedBuckets]) -> None:
    buckets = table()
    one = Rate(per_minute=60, burst=1)
    assert await buckets.take(["user:x"], [one], NOW) is None
    assert await buckets.take(["ip:y", "user:x"], [one, one], NOW) is not None
    assert await buckets.take(["ip:y"], [one], NOW) is None  # the refused pair took nothing


async def test_both_workers_drain_one_bucket(table: Callable[..., SharedBuckets]) -> None:
    first, second = table(), table()
    assert await first.take(["ip:a"], [RATE], NOW) is None
    assert await second.take(["ip:a"], [RATE], NOW) is None
    assert await first.take(["ip:a"], [RATE], NOW) is None
    assert await second.take(["ip:a"], [RATE], NOW) is not None


def _drain(path: str, count: int) -> None:
    async def main() -> None:
        buckets = SharedBuckets(Path(path))
        try:
            for _ in range(count):
                assert await buckets.take(["ip:shared"], [RATE], NOW) is None
        finally:
            buckets.close()

    asyncio.run(main())


async def test_another_process_drains_the_same_bucket(
    tmp_path: Path, table: Callable[..., SharedBuckets]
) -> None:
    buckets = table()
    process = multiprocessing.get_context("spawn").Process(
        target=_drain, args=(str(tmp_path / "buckets"), 2)
    )
    process.start()
    await asyncio.to_thread(process.join, 30)
    assert process.exitcode == 0
    assert await buckets.take(["ip:shared"], [RATE], NOW) is None
    assert await buckets.take(["ip:shared"], [RATE], NOW) is not None


async def test_a_full_table_admits_rather_than_refuses(table: Callable[..., SharedBuckets]) -> None:
    buckets = table(slots=8)
    one = Rate(per_minute=1, burst=1)  # nothing refills within the test
    for n in range(100):
        assert await buckets.take([f"k{n}"], [one], NOW) is None  # a new key: a full bucket
