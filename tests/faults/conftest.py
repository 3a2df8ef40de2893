"""Fixtures of the fault tests: the e2e server factory (a real ``tusserver serve``), moto's
S3 server and a real redis-server, and a ``backend`` that is either the local default or
S3 + Redis, and the ``rig`` of the S3 fault tests (``s3rig``)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import distributed_env
from tests.e2e.conftest import pytest_runtest_makereport as pytest_runtest_makereport
from tests.e2e.conftest import server_factory as server_factory
from tests.services_redis import redis_url as redis_url
from tests.services_s3 import moto_s3_endpoint as moto_s3_endpoint

from .s3rig import rig as rig

BACKENDS = ("local", "s3+redis")


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """``TUS_*`` settings of one backend: {} (local disk) or moto S3 + Redis."""
    if request.param == "local":
        return {}
    return distributed_env(
        request.getfixturevalue("moto_s3_endpoint"), request.getfixturevalue("redis_url")
    )
