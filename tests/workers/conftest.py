"""Fixtures: the real ``tusserver serve --workers 2`` in a subprocess (the e2e fixtures)."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import (  # noqa: F401  (fixture and report hook)
    TusServer,
    pytest_runtest_makereport,
    server_factory,
)


@pytest.fixture
def workers(server_factory: Callable[..., TusServer]) -> Callable[..., TusServer]:  # noqa: F811
    """Start ``serve --workers 2`` with extra ``TUS_*`` settings, once both workers run."""
    from tests.workers.procs import wait_workers

    def start(**settings: str) -> TusServer:
        server = server_factory(TUS_WORKERS="2", **settings)
        wait_workers(server, 2)
        return server

    return start


@pytest.fixture
def pin() -> Iterator[Callable[[TusServer], list[http.client.HTTPConnection]]]:
    """``pin(server)``: one open connection to each of its two workers, closed at teardown."""
    from tests.workers.procs import pinned

    opened: list[http.client.HTTPConnection] = []

    def make(server: TusServer) -> list[http.client.HTTPConnection]:
        conns = pinned(server, 2)
        opened.extend(conns)
        return conns

    yield make
    for conn in opened:
        conn.close()
