"""/metrics after real traffic: request counts, bytes, upload events, lock contention, the
sweeper and S3 call latency, scraped and parsed as Prometheus would."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from starlette.applications import Starlette

from tests.apphttp import opened
from tests.asgi_harness import call
from tests.services_redis import REDIS
from tests.services_s3 import (  # noqa: F401  (two fixtures among them)
    CREDENTIALS,
    S3ClientFactory,
    moto_s3_endpoint,
    s3_bucket_client,
)
from tests.test_wiring import closed_port
from tusserver.app import create_app
from tusserver.compose import Components, build_components, open_components
from tusserver.ops.metrics import Metrics, instrument_s3
from tusserver.ops.sweeper import sweep_once
from tusserver.runtime import runtime_of
from tusserver.settings import Settings
from tusserver.state.redis import RedisLocker, RedisStateStore

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}
BASE = "http://test"
MiB = 1024 * 1024

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get(f"{BASE}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["cache-control"] == "no-store"
    return parse(response.text)


async def scrape_app(app: Starlette) -> Samples:
    reply = await call(app, "GET", "/metrics")
    assert reply.status == 200
    return parse(reply.body.decode())


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
    ):
        http.headers.update(TUS)
        yield http


async def test_an_upload_is_counted_by_method_status_bytes_and_events(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, media_probe=False))
    data = bytes(range(256)) * 400
    async with serving(app) as http:
        created = await http.post(f"{BASE}/files/", headers={"Upload-Length": str(len(data))})
        assert created.status_code == 201
        url = created.headers["Location"]
        half = len(data) // 2
        for offset in (0, half):
            patched = await http.patch(
                url,
                content=data[offset : offset + half],
                headers={**PATCH_HEADERS, "Upload-Offset": str(offset)},
            )
            assert patched.status_code == 204
        assert (await http.head(url)).status_code == 200
        assert (await http.request("BREW", f"{BASE}/files/")).status_code == 405
        samples = await scrape(http)

    assert value(samples, "tus_http_requests_total", method="POST", status="201") == 1
    assert value(samples, "tus_http_requests_total", method="PATCH", status="204") == 2
    assert value(samples, "tus_http_requests_total", method="HEAD", status="200") == 1
    # Made-up verbs share one label value; the path is never a label (upload ids in it).
    assert value(samples, "tus_http_requests_total", method="OTHER", status="405") == 1
    label_sets = {
        frozenset(dict(labels)) for name, labels in samples if name.startswith("tus_http_requests")
    }
    assert label_sets == {frozenset({"method", "status"})}
    assert value(samples, "tus_http_request_duration_seconds_count", method="PATCH") == 2
    assert value(samples, "tus_bytes_received_total") == len(data)
    assert value(samples, "tus_uploads_created_total") == 1
    assert value(samples, "tus_uploads_finished_total") == 1
    assert value(samples, "tus_uploads_terminated_total") == 0
    assert value(samples, "tus_active_uploads") == 0


async def test_creation_with_upload_counts_and_a_failed_checksum_does_not(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(data_dir=tmp_path, catalog=False))
    async with serving(app) as http:
        created = await http.post(
            f"{BASE}/files/",
            content=b"hello",
            headers={**PATCH_HEADERS, "Upload-Length": "10"},
        )
        assert created.status_code == 201
        refused = await http.patch(
            created.headers["Location"],
            content=b"world",
            headers={
                **PATCH_HEADERS,
                "Upload-Offset": "5",
                "Upload-Checksum": "sha1 " + "A" * 27 + "=",  # not the digest of b"world"
            },
        )
        assert refused.status_code == 460
        deleted = await http.delete(created.headers["Location"])
        assert deleted.status_code == 204
        samples = await scrape(http)
    assert value(samples, "tus_bytes_received_total") == 5
    assert value(samples, "tus_http_requests_total", method="PATCH", status="460") == 1
    assert value(samples, "tus_uploads_created_total") == 1
    assert value(samples, "tus_uploads_terminated_total") == 1


@pytest.fixture(params=["local", "redis"])
async def contended_app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Starlette]:
    """An app whose locker reports to the app's metrics: in-process, and Redis-backed."""
    settings = Settings(data_dir=tmp_path, lock_wait=1.0, read_timeout=5.0, catalog=False)
    if request.param == "local":
        async with opened(create_app(settings)) as app:
            yield app
        return
    metrics = Metrics()
    client = Redis.from_url(REDIS.ensure_started())
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    locker = RedisLocker(client, prefix=prefix, metrics=metrics)
    local = build_components(settings)
    components = Components(
        composer=local.composer, state=RedisStateStore(client, prefix=prefix), locker=locker
    )
    async with opened(create_app(settings, components=components, metrics=metrics)) as app:
        yield app
    await locker.close()
    await client.aclose()


async def test_a_head_that_stops_a_stalled_patch_counts_a_wait_and_a_release_request(
    contended_app: Starlette,
) -> None:
    app = contended_app
    part = b"x" * 65536
    created = await call(app, "POST", "/files/", {**TUS, "Upload-Length": str(4 * len(part))})
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    drained = asyncio.Event()
    stalled = asyncio.create_task(
        call(
            app,
            "PATCH",
            f"/files/{upload_id}",
            {**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(4 * len(part))},
            [part],
            ending="hang",
            drained=drained,
        )
    )
    await drained.wait()
    during = await scrape_app(app)
    assert value(during, "tus_active_uploads") == 1
    assert value(during, "tus_lock_waits_total") == 0

    head = await call(app, "HEAD", f"/files/{upload_id}", TUS)
    assert head.status == 200
    assert (await asyncio.wait_for(stalled, 2)).status == 423
    after = await scrape_app(app)
    assert value(after, "tus_lock_waits_total") == 1
    assert value(after, "tus_lock_wait_seconds_count") == 1
    assert 0 < value(after, "tus_lock_wait_seconds_sum") < 1.0
    assert value(after, "tus_lock_release_requests_total") == 1
    assert value(after, "tus_active_uploads") == 0
    assert value(after, "tus_bytes_received_total") == len(part)  # persisted when released


async def test_the_sweeper_reports_what_it_expired_freed_and_skipped(tmp_path: Path) -> None:
    now = [1_000_000.0]
    app = create_app(
        Settings(data_dir=tmp_path, expiration=60, catalog=False), clock=lambda: now[0]
    )
    async with opened(app):
        idle = await call(
            app, "POST", "/files/", {**PATCH_HEADERS, "Upload-Length": "10"}, [b"abc"]
        )
        busy = await call(app, "POST", "/files/", {**TUS, "Upload-Length": "10"})
        assert idle.status == busy.status == 201
        busy_id = busy.headers["location"].rsplit("/", 1)[1]
        now[0] += 61
        service = runtime_of(app).service
        async with service.locked(busy_id, request_release=False):
            report = await sweep_once(service)
        assert (report.expired, report.skipped_busy) == (1, 1)
        samples = await scrape_app(app)
        assert value(samples, "tus_sweeps_total") == 1
        assert value(samples, "tus_uploads_expired_total") == 1
        assert value(samples, "tus_sweep_bytes_freed_total") == 3
        assert value(samples, "tus_sweep_skipped_busy_total") == 1
        assert value(samples, "tus_sweep_failures_total") == 0
        # Expiry is not a client's termination.
        assert value(samples, "tus_uploads_terminated_total") == 0


async def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, metrics=False, catalog=False))
    async with opened(app):
        assert (await call(app, "GET", "/metrics")).status == 404
        created = await call(
            app, "POST", "/files/", {**PATCH_HEADERS, "Upload-Length": "3"}, [b"abc"]
        )
        assert created.status == 201


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    one = create_app(Settings(data_dir=tmp_path / "one", catalog=False))
    two = create_app(Settings(data_dir=tmp_path / "two", catalog=False))
    async with opened(one), opened(two):
        await call(one, "POST", "/files/", {**TUS, "Upload-Length": "3"})
        assert value(await scrape_app(one), "tus_uploads_created_total") == 1
        assert value(await scrape_app(two), "tus_uploads_created_total") == 0


async def test_s3_calls_are_timed_by_operation(
    tmp_path: Path,
    s3_bucket_client: S3ClientFactory,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, secret in CREDENTIALS.items():
        monkeypatch.setenv(key.upper(), secret)
    async with s3_bucket_client() as (client, bucket):
        endpoint = client.meta.endpoint_url
        settings = Settings(
            data_dir=tmp_path,
            storage="s3",
            s3_bucket=bucket,
            s3_endpoint_url=endpoint,
            max_size=1 << 30,
            catalog=False,
        )
        metrics = Metrics()
        async with contextlib.AsyncExitStack() as stack:
            components = await open_components(settings, stack, metrics=metrics)
            app = create_app(settings, components=components, metrics=metrics)
            data = b"s3 bytes " * 1000
            async with serving(app) as http:
                created = await http.post(
                    f"{BASE}/files/",
                    content=data,
                    headers={**PATCH_HEADERS, "Upload-Length": str(len(data))},
                )
                assert created.status_code == 201
                missing = await http.head(f"{BASE}/files/{uuid.uuid4().hex}")
                assert missing.status_code == 404
                samples = await scrape(http)

    assert value(samples, "tus_bytes_received_total") == len(data)
    count = "tus_s3_request_duration_seconds_count"
    assert value(samples, count, operation="HeadBucket") == 1  # the startup check
    for operation in ("CreateMultipartUpload", "PutObject"):
        assert value(samples, count, operation=operation) >= 1, operation
    assert value(samples, "tus_s3_request_duration_seconds_sum", operation="PutObject") > 0
    # A HEAD of an unknown upload looks for its info object in S3 (state rebuild): a 404.
    errors = {
        dict(labels)["code"]
        for (name, labels), v in samples.items()
        if name == "tus_s3_errors_total" and v > 0
    }
    assert errors & {"NoSuchKey", "404"}, errors


async def test_s3_connection_failures_are_counted_by_exception_class() -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session
    from botocore.exceptions import EndpointConnectionError

    metrics = Metrics()
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=AioConfig(retries={"max_attempts": 1, "mode": "standard"}),
        **CREDENTIALS,
    ) as client:
        instrument_s3(client.meta.events, metrics)
        with pytest.raises(EndpointConnectionError):
            await client.head_bucket(Bucket="any")
    samples = parse(metrics.render().decode())
    assert value(samples, "tus_s3_request_duration_seconds_count", operation="HeadBucket") == 1
    assert (
        value(
            samples, "tus_s3_errors_total", operation="HeadBucket", code="EndpointConnectionError"
        )
        == 1
    )
