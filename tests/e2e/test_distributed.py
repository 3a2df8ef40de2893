"""Two server instances sharing Redis and S3 (moto's server), as behind a load balancer.

An upload started on A is resumed on B; a HEAD on B stops a PATCH stuck on A within about a
second; losing every Redis key mid-upload loses no acknowledged byte, because state is rebuilt
from S3 (info object, ListParts, tail object).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
from redis import Redis

from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)

from .conftest import TusServer, create_upload, distributed_env, download_sha256, request, sha256
from .test_tuspy import ThrottledPatch, send_partial_patch, uploader_for, wait_for_stable_offset

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024


@pytest.fixture
def cluster(
    server_factory: Callable[..., TusServer],
    moto_s3_endpoint: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> tuple[TusServer, TusServer, str]:
    env = distributed_env(moto_s3_endpoint, redis_url)
    return server_factory(**env), server_factory(**env), redis_url


def on(server: TusServer, url: str) -> str:
    """The same upload URL, addressed to another instance (what a load balancer does)."""
    return server.base_url + url.rsplit("/", 1)[1]


def assert_stored(url: str, data: bytes) -> None:
    assert download_sha256(url) == (len(data), sha256(data))


def test_upload_started_on_a_resumes_on_b(cluster: tuple[TusServer, TusServer, str]) -> None:
    a, b, _ = cluster
    data = os.urandom(64 * MiB)
    url = create_upload(a.base_url, len(data))
    send_partial_patch(a, url, data, 23 * MiB)  # then the connection drops
    offset = wait_for_stable_offset(on(b, url))
    assert 0 < offset <= 23 * MiB
    uploader = uploader_for(b, data, url=on(b, url), chunk_size=8 * MiB)
    uploader.offset = offset
    uploader.upload()
    assert_stored(on(a, url), data)
    assert_stored(on(b, url), data)


def test_head_on_b_stops_a_patch_stuck_on_a(cluster: tuple[TusServer, TusServer, str]) -> None:
    a, b, _ = cluster
    data = os.urandom(16 * MiB)
    url = create_upload(a.base_url, len(data))
    slow = ThrottledPatch(url, data, rate=2 * MiB)
    thread = threading.Thread(target=slow.run, daemon=True)
    thread.start()
    time.sleep(1.5)
    started = time.monotonic()
    status, headers, _ = request("HEAD", on(b, url))
    elapsed = time.monotonic() - started
    assert status == 200, headers
    assert elapsed < 2.0, f"HEAD on B took {elapsed:.2f}s"
    offset = int(headers["upload-offset"])
    assert offset <= slow.sent
    thread.join(30)
    uploader = uploader_for(b, data, url=on(b, url), chunk_size=8 * MiB)
    uploader.offset = wait_for_stable_offset(on(b, url), positive=False)
    uploader.upload()
    assert_stored(on(b, url), data)


def test_flushall_mid_upload_loses_nothing(cluster: tuple[TusServer, TusServer, str]) -> None:
    a, b, redis_address = cluster
    data = os.urandom(24 * MiB)
    uploader = uploader_for(a, data, chunk_size=7 * MiB)
    uploader.upload_chunk()
    uploader.upload_chunk()  # 14 MiB acknowledged: two 5 MiB parts and a 4 MiB tail
    acknowledged = uploader.offset
    Redis.from_url(redis_address).flushall()
    # B has never seen this upload, and Redis forgot it: the state comes back from S3.
    status, headers, _ = request("HEAD", on(b, uploader.url))
    assert status == 200, headers
    assert int(headers["upload-offset"]) == acknowledged
    assert headers["upload-length"] == str(len(data))
    resumed = uploader_for(b, data, url=on(b, uploader.url), chunk_size=7 * MiB)
    resumed.offset = acknowledged
    resumed.upload()
    assert_stored(on(a, uploader.url), data)
