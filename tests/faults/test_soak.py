"""A small soak in the suite: thousands of requests, malformed ones and cut connections
included, against a real uvicorn server with authentication and a trusted proxy on (a JWT
per request for one of many users, a new ``X-Forwarded-For`` address each time).

One soak per module (``bench.soak.run``: a warm-up, then two rounds), several checks. The
robust part is the server's own tables, read through ``bench.soak_server``'s probe once it
is idle: the lock tables and in-flight work are empty, the bounded tables are within their
bounds, asyncio tasks and open files are back where they were. RSS is a secondary guard
with a generous margin (see ``bench.soak`` for why), never a timing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.fault

# Small enough for the suite (tens of seconds on a busy 2-core machine, data on tmpfs),
# large enough that a table growing per request, upload, user or address shows.
REQUESTS = 4000
ROUNDS = 2
MAX_GROWTH = 48 * soak.MiB


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[soak.Reading]]:
    # On tmpfs when there is one: the soak is about memory, and fsyncs on a shared disk
    # would only make it slower.
    shm = Path("/dev/shm")
    on_shm = shm.is_dir() and bool(shm.stat().st_mode & 0o002)
    root = (
        Path(tempfile.mkdtemp(prefix="tussoak-", dir=shm))
        if on_shm
        else tmp_path_factory.mktemp("soak")
    )
    options = soak.parser().parse_args(
        [
            *("--requests", str(REQUESTS), "--rounds", str(ROUNDS), "--warmup", "800"),
            *("--concurrency", "8", "--seconds", "90", "--users", "2000"),
            "--auth",
            "--trust-proxy",
        ]
    )
    try:
        yield soak.run(options, root)
    finally:
        if on_shm:
            shutil.rmtree(root, ignore_errors=True)


def test_the_load_ran_and_no_client_saw_a_5xx(readings: list[soak.Reading]) -> None:
    table = soak.report(readings)
    for reading in readings[1:]:
        assert reading.tally is not None
        assert reading.tally.requests >= REQUESTS, table
        assert not reading.tally.server_errors, table
        assert not reading.tally.client_errors, table
        # Each kind of answer the mix is built to provoke showed up.
        for status in ("201", "204", "200", "400", "401", "404", "409", "422", "460"):
            assert reading.tally.statuses[status], f"no {status}\n{table}"


def test_the_server_sent_no_5xx_even_on_cut_connections(readings: list[soak.Reading]) -> None:
    base, last = readings[0], readings[-1]
    sent = {k: v - base.server_errors.get(k, 0) for k, v in last.server_errors.items()}
    assert not {k: v for k, v in sent.items() if v}, soak.report(readings)


def test_in_flight_tables_are_empty_and_bounded_ones_within_bounds(
    readings: list[soak.Reading],
) -> None:
    table = soak.report(readings)
    base, last = readings[0], readings[-1]
    sizes = last.probe["sizes"]
    for name in soak.IDLE_EMPTY:
        assert not sizes.get(name), f"{name} is {sizes.get(name)} when idle\n{table}"
    for name, bound in soak.BOUNDS.items():
        assert (sizes.get(name) or 0) <= bound, table
    assert last.probe["tasks"] <= base.probe["tasks"] + soak.TASK_SLACK, table
    assert last.probe["fds"] <= base.probe["fds"] + soak.FD_SLACK, table


def test_rss_comes_back_near_its_baseline(readings: list[soak.Reading]) -> None:
    base, last = readings[0], readings[-1]
    assert last.rss - base.rss <= MAX_GROWTH, soak.report(readings)
