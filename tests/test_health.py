"""/healthz and /readyz: readiness names the backend that failed (storage, state, database),
by exception class only, quickly, and never leaks a URL or a password."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from tests.services_postgres import create_database, drop_database
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import (  # noqa: F401  (two fixtures among them)
    CREDENTIALS,
    S3ClientFactory,
    moto_s3_endpoint,
    s3_bucket_client,
)
from tests.test_wiring import closed_port
from tusserver.app import create_app
from tusserver.compose import Components, build_components, open_components
from tusserver.ops.health import Readiness, run_check
from tusserver.settings import Settings
from tusserver.state.locks import InProcessLocker
from tusserver.state.redis import RedisStateStore

BASE = "http://test"
SECRET = "hunter2"


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
    ):
        yield http


def assert_discreet(response: httpx.Response, *secrets: str) -> None:
    for secret in ("://", "127.0.0.1", *secrets):
        assert secret not in response.text


async def test_healthz_and_readyz_when_everything_answers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, media_probe=False))
    async with serving(app) as http:
        # No Tus-Resumable header: these are not tus endpoints.
        live = await http.get(f"{BASE}/healthz")
        ready = await http.get(f"{BASE}/readyz")
    assert live.status_code == 200
    assert ready.status_code == 200
    assert ready.headers["cache-control"] == "no-store"
    assert ready.json() == {
        "status": "ready",
        "checks": {"storage": "ok", "state": "ok", "database": "ok"},
    }


async def test_readyz_is_503_until_the_backends_are_open(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        before = await http.get(f"{BASE}/readyz")  # no lifespan has run
        assert (await http.get(f"{BASE}/healthz")).status_code == 200
    assert before.status_code == 503
    assert before.json() == {"status": "starting"}


async def test_a_vanished_data_directory_fails_storage_and_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = create_app(Settings(data_dir=data, catalog=False))
    async with serving(app) as http:
        shutil.rmtree(data)
        response = await http.get(f"{BASE}/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"storage": "failed: FileNotFoundError", "state": "failed: FileNotFoundError"},
    }
    assert str(tmp_path) not in response.text


async def test_redis_state_answers(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    settings = Settings(data_dir=tmp_path, state="redis", redis_url=redis_url, catalog=False)
    app = create_app(settings)
    async with serving(app) as http:
        response = await http.get(f"{BASE}/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"storage": "ok", "state": "ok"}


async def test_unreachable_redis_fails_state_quickly_without_its_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, media_probe=False)
    client = Redis.from_url(f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0")
    local = build_components(settings)
    components = Components(
        composer=local.composer, state=RedisStateStore(client), locker=InProcessLocker()
    )
    app = create_app(settings, components=components)
    try:
        async with serving(app) as http:
            started = time.monotonic()
            response = await http.get(f"{BASE}/readyz")
            elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"] == body["checks"]["database"] == "ok"
    assert body["checks"]["state"] in ("failed: ConnectionError", "failed: TimeoutError")
    assert elapsed < 3.0  # each check is bounded (2 s)
    assert_discreet(response, SECRET)


async def test_a_lost_database_fails_database_without_its_url(tmp_path: Path) -> None:
    url = create_database("health")
    # Trust authentication ignores the password; it is there to prove it never leaks.
    with_password = url.replace("postgres@", f"postgres:{SECRET}@")
    app = create_app(
        Settings(
            data_dir=tmp_path, database_url=with_password, database_migrate=True, media_probe=False
        )
    )
    try:
        async with serving(app) as http:
            assert (await http.get(f"{BASE}/readyz")).status_code == 200
            drop_database(url)  # its connections are cut; reconnecting finds no database
            response = await http.get(f"{BASE}/readyz")
    finally:
        drop_database(url)
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["storage"] == body["checks"]["state"] == "ok"
    assert body["checks"]["database"].startswith("failed: ")
    assert_discreet(response, SECRET, url.rsplit("/", 1)[1])


async def test_s3_storage_answers_then_fails_when_its_bucket_is_gone(
    tmp_path: Path,
    s3_bucket_client: S3ClientFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, secret in CREDENTIALS.items():
        monkeypatch.setenv(key.upper(), secret)
    async with s3_bucket_client() as (client, bucket):
        settings = Settings(
            data_dir=tmp_path,
            storage="s3",
            s3_bucket=bucket,
            s3_endpoint_url=client.meta.endpoint_url,
            max_size=1 << 30,
            catalog=False,
        )
        async with contextlib.AsyncExitStack() as stack:
            app = create_app(settings, components=await open_components(settings, stack))
            async with serving(app) as http:
                ready = await http.get(f"{BASE}/readyz")
                await client.delete_bucket(Bucket=bucket)
                gone = await http.get(f"{BASE}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"storage": "ok", "state": "ok"}
    assert gone.status_code == 503
    assert gone.json()["checks"] == {"storage": "failed: ClientError", "state": "ok"}
    assert_discreet(gone, bucket)


async def test_a_hung_check_times_out() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    started = time.monotonic()
    assert await run_check(hang, 0.1) == "failed: TimeoutError"
    assert time.monotonic() - started < 1.0


async def test_readiness_says_stopping_once_shutdown_began() -> None:
    readiness = Readiness()
    readiness.start({}, stopping=lambda: True)
    response = await readiness.endpoint(None)  # type: ignore[arg-type]
    assert response.status_code == 503
    assert response.body == b'{"status":"stopping"}'
