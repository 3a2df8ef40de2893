"""Fixtures of the IETF draft tests: the e2e server factory (a real ``tusserver serve`` on
loopback), and moto's S3 server and a real redis-server for the S3 + Redis backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TusServer, distributed_env
from tests.e2e.conftest import pytest_runtest_makereport as pytest_runtest_makereport
from tests.e2e.conftest import server_factory as server_factory
from tests.netutil import free_port
from tests.services_redis import redis_url as redis_url
from tests.services_s3 import moto_s3_endpoint as moto_s3_endpoint


def _start(root: Path, extra: dict[str, str]) -> TusServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    server = TusServer(
        port=free_port(), data_dir=root / "data", log_path=root / "server.log", env=env
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TusServer]:
    """One server for a module's tests that need nothing of their own (a start takes seconds).

    ``TUS_MAX_SIZE`` is set so ``Upload-Limit`` has a ``max-size`` to announce.
    """
    server = _start(tmp_path_factory.mktemp("ietf-local"), {"TUS_MAX_SIZE": "1000000"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_s3_server(
    tmp_path_factory: pytest.TempPathFactory, moto_s3_endpoint: str, redis_url: str
) -> Iterator[TusServer]:
    """The same on moto's S3 and a real Redis."""
    env = distributed_env(moto_s3_endpoint, redis_url, TUS_MAX_SIZE="1000000")
    server = _start(tmp_path_factory.mktemp("ietf-s3"), env)
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3+redis"])
def backend_server_factory(
    request: pytest.FixtureRequest, server_factory: Callable[..., TusServer]
) -> Callable[..., TusServer]:
    """``server_factory`` on local storage, or on moto's S3 (a fresh bucket) and a real Redis."""
    if request.param == "local":
        return server_factory
    env = distributed_env(
        request.getfixturevalue("moto_s3_endpoint"), request.getfixturevalue("redis_url")
    )
    return lambda **settings: server_factory(**{**env, **settings})


@pytest.fixture
def backend_server(backend_server_factory: Callable[..., TusServer]) -> TusServer:
    return backend_server_factory()
