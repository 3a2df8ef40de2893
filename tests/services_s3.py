"""moto's S3 *server* for the tests (aiobotocore only works with moto in server mode).

``moto_s3_endpoint`` starts ``python -m moto.server`` once per session on a free loopback port
and kills it at the end; ``s3_bucket_client`` is a factory giving an aiobotocore client and a
fresh bucket per use, so tests never see each other's objects.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from tests.netutil import free_port

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
S3ClientFactory = Callable[[], contextlib.AbstractAsyncContextManager[tuple["S3Client", str]]]


class _MotoServer:
    """One moto server per test process, started on first use (runs without S3 pay nothing)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def ensure_started(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        port = free_port()
        env = {**os.environ, **{k.upper(): v for k, v in CREDENTIALS.items()}}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        # Also stopped by the session fixture; this covers use through STORE_BACKENDS alone.
        atexit.register(self.stop)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return self.url
            except urllib.error.HTTPError:
                return self.url  # it answers: good enough
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start in 30 s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


MOTO = _MotoServer()


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    yield MOTO.ensure_started()
    MOTO.stop()


@contextlib.asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[S3Client]:
    session = get_session()
    async with session.create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        config=AioConfig(s3={"addressing_style": "path"}, max_pool_connections=32),
        **CREDENTIALS,
    ) as client:
        yield client


@pytest.fixture
def s3_bucket_client(moto_s3_endpoint: str) -> S3ClientFactory:
    """A factory: ``async with s3_bucket_client() as (client, bucket)``; a fresh bucket each."""

    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[tuple[S3Client, str]]:
        async with s3_client(moto_s3_endpoint) as client:
            bucket = f"test-{uuid.uuid4().hex[:16]}"
            await client.create_bucket(Bucket=bucket)
            yield client, bucket

    return factory
