"""The sweep job: expired uploads and orphaned storage go, live and busy uploads stay, and
only one sweeper works at a time; on local disk and on moto S3 with a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from redis import Redis

from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)
from tusserver.app import create_app
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

MiB = 1024 * 1024


async def open_app(settings: Settings, clock: Clock) -> tuple[Any, Any, httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    http.headers["Tus-Resumable"] = "1.0.0"
    return app, lifespan, http


async def create(http: httpx.AsyncClient, length: int, data: bytes = b"") -> str:
    headers = {"Upload-Length": str(length)}
    if data:
        headers["Content-Type"] = "application/offset+octet-stream"
    response = await http.post("http://t/files/", content=data, headers=headers)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Clock]]:
    clock = Clock()
    settings = Settings(
        data_dir=tmp_path, expiration=60, sweep_interval=3600, orphan_grace=600, catalog=False
    )
    app, lifespan, http = await open_app(settings, clock)
    try:
        yield app, http, clock
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_local_pass_removes_expired_and_orphans_and_keeps_the_rest(
    local: tuple[Any, httpx.AsyncClient, Clock], tmp_path: Path
) -> None:
    app, http, clock = local
    expired = await create(http, 100, b"x" * 10)
    finished = await create(http, 3, b"abc")
    orphan = uuid.uuid4().hex
    (tmp_path / f"{orphan}.bin").write_bytes(b"left by a crash")
    old = clock.now - 3600
    os.utime(tmp_path / f"{orphan}.bin", (old, old))
    young_orphan = uuid.uuid4().hex
    (tmp_path / f"{young_orphan}.bin").write_bytes(b"a creation in progress")
    clock.now += 61
    live = await create(http, 100, b"y" * 5)  # created after the clock moved: not expired
    report = await runtime_of(app).sweep_job.run_once()
    assert report["uploads"]["expired"] == 1
    assert report["uploads"]["bytes_freed"] == 10
    assert report["orphans_removed"] == 1
    assert not (tmp_path / f"{expired}.bin").exists()
    assert (await http.head(f"http://t/files/{expired}")).status_code == 404
    assert not (tmp_path / f"{orphan}.bin").exists()
    assert (tmp_path / f"{young_orphan}.bin").exists()
    assert (tmp_path / f"{finished}.bin").read_bytes() == b"abc"
    assert (await http.head(f"http://t/files/{live}")).headers["Upload-Offset"] == "5"


async def test_a_busy_upload_is_skipped_not_torn_down(
    local: tuple[Any, httpx.AsyncClient, Clock], tmp_path: Path
) -> None:
    app, http, clock = local
    busy = await create(http, 100, b"z" * 10)
    clock.now += 61
    service = runtime_of(app).service
    async with service.locked(busy, request_release=False):
        report = await runtime_of(app).sweep_job.run_once()
    assert report["uploads"]["skipped_busy"] == 1
    assert (tmp_path / f"{busy}.bin").exists()
    assert (await runtime_of(app).sweep_job.run_once())["uploads"]["expired"] == 1


async def test_only_one_local_sweeper_works_at_a_time(
    local: tuple[Any, httpx.AsyncClient, Clock],
) -> None:
    app, _, _ = local
    job = runtime_of(app).sweep_job
    async with job.lease.hold() as held:
        assert held
        assert await job.run_once() == {"skipped": "another sweeper holds the lease"}
    assert "uploads" in await job.run_once()


def test_the_sweep_command_prints_its_report(tmp_path: Path) -> None:
    orphan = uuid.uuid4().hex
    (tmp_path / f"{orphan}.bin").write_bytes(b"x")
    os.utime(tmp_path / f"{orphan}.bin", (1, 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    done = subprocess.run(
        [sys.executable, "-m", "tusserver.cli", "sweep", "--once", "--data-dir", str(tmp_path)],
        env={**env, "TUS_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["orphans_removed"] == 1
    assert report["uploads"]["expired"] == 0
    assert report["catalog"] == {"purged": 0, "purge_failed": 0, "requeued": 0}
    # The log is JSON lines and names the pass.
    events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line]
    assert "sweep.done" in events


@pytest.fixture
async def distributed(
    tmp_path: Path,
    moto_s3_endpoint: str,  # noqa: F811
    redis_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Clock, Any, str, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    bucket = f"sweep-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name=REGION, **CREDENTIALS)
    s3.create_bucket(Bucket=bucket)
    prefix = f"tus-{bucket}:"
    settings = Settings(
        data_dir=tmp_path,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_s3_endpoint,
        s3_prefix="up/",
        s3_part_size=5 * MiB,
        max_size=1024 * MiB,
        state="redis",
        redis_url=redis_url,
        redis_prefix=prefix,
        expiration=60,
        sweep_interval=3600,
        orphan_grace=0,
        catalog=False,
    )
    clock = Clock()
    app, lifespan, http = await open_app(settings, clock)
    try:
        yield app, http, clock, s3, bucket, prefix
    finally:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_s3_pass_leaves_nothing_of_expired_uploads_and_aborts_orphans(
    distributed: tuple[Any, httpx.AsyncClient, Clock, Any, str, str],
    redis_url: str,  # noqa: F811
) -> None:
    app, http, clock, s3, bucket, prefix = distributed
    expired = await create(http, 20 * MiB, os.urandom(6 * MiB + 7))  # a part and a tail
    orphan = uuid.uuid4().hex  # a multipart upload no state or info object knows
    s3.create_multipart_upload(Bucket=bucket, Key=f"up/{orphan}")
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="other-tool/file.bin")
    clock.now += 61
    live = await create(http, 20 * MiB, os.urandom(6 * MiB))
    # Lost from Redis but rebuilt from its info object: never taken for an orphan.
    recoverable = await create(http, 20 * MiB, os.urandom(1024))
    Redis.from_url(redis_url).delete(f"{prefix}upload:{recoverable}")

    report = await runtime_of(app).sweep_job.run_once()
    assert report["uploads"]["expired"] == 1
    assert report["orphans_removed"] == 1

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    uploads = {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert not any(expired in key for key in keys | uploads)
    assert f"up/{orphan}" not in uploads
    assert "other-tool/file.bin" in uploads  # not ours: left alone
    assert f"up/{live}" in uploads
    assert f"up/{recoverable}" in uploads
    assert not Redis.from_url(redis_url).exists(f"{prefix}upload:{expired}")
    assert (await http.head(f"http://t/files/{live}")).headers["Upload-Offset"] == str(6 * MiB)
    assert (await http.head(f"http://t/files/{recoverable}")).headers["Upload-Offset"] == "1024"
    s3.abort_multipart_upload(
        Bucket=bucket, Key="other-tool/file.bin", UploadId=foreign["UploadId"]
    )


async def test_two_sweepers_on_redis_never_work_at_once(
    distributed: tuple[Any, httpx.AsyncClient, Clock, Any, str, str],
) -> None:
    app, *_ = distributed
    job = runtime_of(app).sweep_job
    reports = await asyncio.gather(*(job.run_once() for _ in range(5)))
    worked = [r for r in reports if "skipped" not in r]
    assert len(worked) >= 1
    async with job.lease.hold() as held:
        assert held
        assert "skipped" in await job.run_once()
