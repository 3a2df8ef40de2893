"""No lost catalog records: uploads that finish while the catalog database is down are
recorded later, exactly once, with the right size, sha256 and metadata.

The database is broken for real while uploads finish over HTTP: SQLite's ``files`` table is
renamed away by another connection (every INSERT fails), Postgres refuses connections to the
catalog's database and the open ones are killed. Then it comes back, a sweep runs, and the
records appear; also after a restart (the outbox outlives the process), and in the
distributed mode (Redis outbox, moto S3, Postgres) with two instances sweeping at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from catalog.backlog import record_backlog
from tests.api.support import SECRET, bearer
from tests.apphttp import serving
from tests.catalog.outage import Database
from tests.clocks import Clock
from tests.services_postgres import create_database, drop_database
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

FILES = "http://t/files/"
API = "http://t/api/v1/files"
UPLOADS = "http://t/api/v1/uploads"
OCTETS = "application/offset+octet-stream"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}", "sqlite")
        return
    url = create_database("outbox")
    yield Database(url, "postgres")
    Database(url, "postgres").restore()
    drop_database(url)


def local_settings(tmp_path: Path, database: Database, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database.url,
        database_migrate=True,
        media_probe=False,
        sweep_interval=3600,
        **extra,
    )


def metadata(name: str) -> str:
    return f"filename {base64.b64encode(name.encode()).decode()},filetype dGV4dC9wbGFpbg=="


def upload_id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


async def finish_by_patch(http: httpx.AsyncClient, name: str, data: bytes) -> str:
    created = await http.post(
        FILES, headers={"Upload-Length": str(len(data)), "Upload-Metadata": metadata(name)}
    )
    url = created.headers["Location"]
    half = len(data) // 2
    for offset, chunk in ((0, data[:half]), (half, data[half:])):
        response = await http.patch(
            url,
            content=chunk,
            headers={"Upload-Offset": str(offset), "Content-Type": OCTETS},
        )
        assert response.status_code == 204, response.text
    return upload_id(created)


async def finish_at_creation(http: httpx.AsyncClient, name: str, data: bytes) -> str:
    response = await http.post(
        FILES,
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(name),
            "Content-Type": OCTETS,
        },
    )
    assert response.headers["Upload-Offset"] == str(len(data))
    return upload_id(response)


async def finish_by_concat(http: httpx.AsyncClient, name: str, data: bytes) -> str:
    urls = []
    for piece in (data[:5], data[5:]):
        response = await http.post(
            FILES,
            content=piece,
            headers={
                "Upload-Length": str(len(piece)),
                "Upload-Concat": "partial",
                "Content-Type": OCTETS,
            },
        )
        upload_id(response)
        urls.append(response.headers["Location"].replace("http://t", ""))
    final = await http.post(
        FILES,
        headers={"Upload-Concat": "final;" + " ".join(urls), "Upload-Metadata": metadata(name)},
    )
    return upload_id(final)


Finisher = Callable[[httpx.AsyncClient, str, bytes], Any]
FINISHERS: dict[str, Finisher] = {
    "patch.txt": finish_by_patch,
    "creation.txt": finish_at_creation,
    "concat.txt": finish_by_concat,
}


async def finish_all(http: httpx.AsyncClient) -> dict[str, tuple[str, bytes]]:
    """Each way a tus upload finishes; name -> (upload id, bytes)."""
    done = {}
    for name, finish in FINISHERS.items():
        data = f"the bytes of {name}, finished while the catalog was down".encode()
        done[name] = (await finish(http, name, data), data)
    return done


async def check_recorded_once(http: httpx.AsyncClient, done: dict[str, tuple[str, bytes]]) -> None:
    await runtime_of(http.app).catalog.drain()  # type: ignore[attr-defined]  # sha256 of the concat
    for name, (file_id, data) in done.items():
        record = (await http.get(f"{API}/{file_id}")).json()
        assert (record["filename"], record["size"]) == (name, len(data)), record
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["metadata"]["filetype"] == "text/plain"
    listed = (await http.get(API, params={"page_size": 50})).json()
    ids = [item["id"] for item in listed["items"]]
    assert len(ids) == len(set(ids))  # no record twice
    assert {i for i, _ in done.values()} <= set(ids)


async def sweep(http: httpx.AsyncClient) -> dict[str, int]:
    report = await runtime_of(http.app).sweep_job.run_once()  # type: ignore[attr-defined]
    outbox: dict[str, int] = report["catalog_outbox"]
    return outbox


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_uploads_finished_while_the_database_is_down_are_recorded_when_it_returns(
    tmp_path: Path, database: Database
) -> None:
    async with serving(local_settings(tmp_path, database)) as http:
        before = await finish_at_creation(http, "before.txt", b"recorded at once")
        database.break_()
        try:
            done = await finish_all(http)  # every finish is still acknowledged
            # HEAD says complete: the bytes are safe, only the record is missing.
            for file_id, data in done.values():
                head = await http.head(f"{FILES}{file_id}")
                assert head.headers["Upload-Offset"] == str(len(data))
            listed = await http.get(API)  # reads say so: 503, never a 500
            assert listed.status_code == 503, listed.text
            assert listed.json()["error"]["code"] == "ERR_CATALOG_UNAVAILABLE"
            still_down = await sweep(http)
            assert (still_down["failed"], still_down["pending"]) == (3, 3)
        finally:
            database.restore()
        for file_id, _ in done.values():
            assert (await http.get(f"{API}/{file_id}")).status_code == 404  # not yet
        assert (await sweep(http))["recorded"] == 3
        await check_recorded_once(http, done)
        assert (await http.get(API)).json()["total_count"] == 4
        assert before in {item["id"] for item in (await http.get(API)).json()["items"]}
        again = await sweep(http)
        assert (again["recorded"], again["pending"]) == (0, 0)
        scraped = (await http.get("http://t/metrics")).text
        assert metric(scraped, "tus_catalog_pending_records") == 0
        assert metric(scraped, "tus_catalog_records_recovered_total") == 3


async def test_the_backlog_outlives_a_restart(tmp_path: Path, database: Database) -> None:
    settings = local_settings(tmp_path, database)
    async with serving(settings) as http:
        database.break_()
        done = await finish_all(http)
    # The process went away with the records unwritten; the database returns later.
    database.restore()
    async with serving(settings) as http:
        assert (await sweep(http))["recorded"] == 3
        await check_recorded_once(http, done)
        assert (await http.get(API)).json()["total_count"] == 3


async def test_a_pending_upload_deleted_before_the_sweep_is_not_recorded(
    tmp_path: Path, database: Database
) -> None:
    async with serving(local_settings(tmp_path, database)) as http:
        database.break_()
        try:
            gone = await finish_at_creation(http, "gone.txt", b"deleted while pending")
            kept = await finish_at_creation(http, "kept.txt", b"kept while pending")
            assert (await http.delete(f"{FILES}{gone}")).status_code == 204
        finally:
            database.restore()
        report = await sweep(http)
        assert (report["recorded"], report["dropped"], report["pending"]) == (1, 1, 0)
        assert (await http.get(f"{API}/{gone}")).status_code == 404
        assert (await http.get(f"{API}/{kept}")).status_code == 200


async def test_a_finished_upload_is_not_in_the_outbox_once_recorded(
    tmp_path: Path, database: Database
) -> None:
    async with serving(local_settings(tmp_path, database)) as http:
        await finish_all(http)
        outbox = runtime_of(http.app).service.ctx.outbox  # type: ignore[attr-defined]
        assert await outbox.count() == 0
        assert (await sweep(http))["pending"] == 0


# -- distributed: Redis outbox, S3 bytes, Postgres catalog, two instances -----------------


@pytest.fixture
def postgres() -> Iterator[Database]:
    url = create_database("outbox")
    yield Database(url, "postgres")
    Database(url, "postgres").restore()
    drop_database(url)


def distributed_settings(
    tmp_path: Path, database: Database, redis: str, endpoint: str, bucket: str
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_prefix="up/",
        max_size=1 << 30,
        state="redis",
        redis_url=redis,
        redis_prefix=f"outbox-{bucket}:",
        database_url=database.url,
        database_migrate=True,
        media_probe=False,
        sweep_interval=3600,
    )


async def test_distributed_backlog_is_recorded_once_by_concurrent_sweepers(
    tmp_path: Path,
    postgres: Database,
    redis_url: str,  # noqa: F811
    moto_s3_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    bucket = f"outbox-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name=REGION, **CREDENTIALS)
    s3.create_bucket(Bucket=bucket)
    settings = distributed_settings(tmp_path, postgres, redis_url, moto_s3_endpoint, bucket)
    async with serving(settings) as one, serving(settings) as two:
        postgres.break_()
        try:
            done = await finish_all(one)
        finally:
            postgres.restore()
        pending = await runtime_of(two.app).service.ctx.outbox.pending(100)  # type: ignore[attr-defined]
        assert sorted(pending) == sorted(i for i, _ in done.values())  # shared through Redis
        # Two sweepers at once (as when a lease lapsed mid-pass): each upload once.
        reports = await asyncio.gather(
            *(
                record_backlog(runtime_of(http.app).service, runtime_of(http.app).catalog, outbox)  # type: ignore[attr-defined]
                for http in (one, two)
                for outbox in [runtime_of(http.app).service.ctx.outbox]  # type: ignore[attr-defined]
            )
        )
        assert sum(r["recorded"] for r in reports) >= 3
        assert (await sweep(two))["pending"] == 0
        await check_recorded_once(two, done)
        assert (await two.get(API)).json()["total_count"] == 3


async def test_rest_and_direct_completes_during_the_outage_fail_and_are_recorded_later(
    tmp_path: Path, database: Database
) -> None:
    settings = local_settings(tmp_path, database, jwt_secret=SECRET)
    admin = bearer("root", admin=True)
    async with serving(settings) as http:
        http.headers.update(admin)
        init = await http.post(
            f"{UPLOADS}/init",
            json={"filename": "rest.txt", "file_size": 11, "content_type": "text/plain"},
        )
        rest_id = init.json()["upload_id"]
        database.break_()
        try:
            finished = await http.patch(
                init.json()["upload_url"],
                content=b"hello world",
                headers={"Upload-Offset": "0", "Content-Type": OCTETS},
            )
            assert finished.status_code == 204
            # The completes still fail while the database is down (a retry records them)...
            complete = await http.post(f"{UPLOADS}/complete", json={"upload_id": rest_id})
            assert complete.status_code == 503, complete.text
            direct = await http.post(
                f"{UPLOADS}/direct?filename=direct.txt",
                content=b"direct bytes",
                headers={"Content-Type": "text/plain"},
            )
            assert direct.status_code == 503, direct.text
        finally:
            database.restore()
        # ...and a client that never retries still gets its files recorded by the sweep.
        assert (await sweep(http))["recorded"] == 2
        listed = {item["filename"]: item for item in (await http.get(API)).json()["items"]}
        assert set(listed) == {"rest.txt", "direct.txt"}
        assert listed["rest.txt"]["sha256"] == hashlib.sha256(b"hello world").hexdigest()
        assert listed["direct.txt"]["sha256"] == hashlib.sha256(b"direct bytes").hexdigest()
        retried = await http.post(f"{UPLOADS}/complete", json={"upload_id": rest_id})
        assert retried.status_code == 200
        assert retried.json()["id"] == rest_id
        assert (await http.get(API)).json()["total_count"] == 2


async def test_pending_uploads_are_neither_expired_nor_taken_for_orphans(
    tmp_path: Path, database: Database
) -> None:
    clock = Clock()
    settings = local_settings(tmp_path, database, expiration=60, orphan_grace=0)
    async with serving(settings, clock=clock) as http:
        database.break_()
        try:
            done = await finish_all(http)
            clock.now += 3600  # far past any expiry and the orphan grace
            report = await runtime_of(http.app).sweep_job.run_once()  # type: ignore[attr-defined]
            assert report["uploads"]["expired"] == 0
            assert report["orphans_removed"] == 0
            assert report["catalog_outbox"]["pending"] == 3
        finally:
            database.restore()
        assert (await sweep(http))["recorded"] == 3
        await check_recorded_once(http, done)
        for file_id, data in done.values():
            assert (await http.get(f"{FILES}{file_id}")).content == data
