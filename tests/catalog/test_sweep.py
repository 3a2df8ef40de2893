"""The catalog's sweep: deleted files lose their bytes after the grace period, lost
processing is redone, and a tus DELETE or expiry removes the record from lists."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.apphttp import serving
from tests.clocks import Clock
from tusserver.compose.runtime import _purge_upload
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

API = "http://test/api/v1/files"


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def client(tmp_path: Path, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, media_probe=False, deleted_grace=60)
    async with serving(settings, clock=clock) as http:
        yield http


async def upload(http: httpx.AsyncClient, data: bytes) -> str:
    response = await http.post(
        "http://test/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert response.status_code == 201
    return response.headers["Location"].rsplit("/", 1)[1]


async def upload_without_running_hash(http: httpx.AsyncClient, data: bytes) -> str:
    """Two PATCHes with the running hash dropped between them, as when the second reaches
    another instance: the sha256 is left to the catalog's processing."""
    created = await http.post("http://test/files/", headers={"Upload-Length": str(len(data))})
    url = created.headers["Location"]
    half = len(data) // 2
    for offset, chunk in ((0, data[:half]), (half, data[half:])):
        if offset:
            runtime_of(http.app).service.digests.discard(url.rsplit("/", 1)[1])  # type: ignore[attr-defined]
        response = await http.patch(
            url,
            content=chunk,
            headers={
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert response.status_code == 204
    return url.rsplit("/", 1)[1]


async def sweep(http: httpx.AsyncClient) -> dict[str, int]:
    app = http.app  # type: ignore[attr-defined]
    service = runtime_of(app).service

    async def purge(upload_id: str) -> None:
        await _purge_upload(service, upload_id)

    report: dict[str, int] = await runtime_of(app).catalog.sweep(purge)
    return report


async def test_deleted_files_keep_their_bytes_until_the_grace_period_ends(
    client: httpx.AsyncClient, clock: Clock, tmp_path: Path
) -> None:
    upload_id = await upload(client, b"keep me a while")
    kept = await upload(client, b"live file")
    assert (await client.delete(f"{API}/{upload_id}")).status_code == 204
    clock.now += 30
    assert (await sweep(client))["purged"] == 0
    assert (tmp_path / f"{upload_id}.bin").exists()
    clock.now += 31
    assert (await sweep(client))["purged"] == 1
    assert not (tmp_path / f"{upload_id}.bin").exists()
    head = await client.head(f"http://test/files/{upload_id}")
    assert head.status_code == 404
    record = await runtime_of(client.app).catalog.repo.get_any(upload_id)  # type: ignore[attr-defined]
    assert record.purged_at is not None
    # Nothing else was touched, and a second pass has nothing to do.
    assert (tmp_path / f"{kept}.bin").read_bytes() == b"live file"
    assert (await sweep(client))["purged"] == 0
    listed = (await client.get(API)).json()
    assert [item["id"] for item in listed["items"]] == [kept]


async def test_processing_lost_with_its_worker_is_redone(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    catalog = runtime_of(client.app).catalog  # type: ignore[attr-defined]
    await catalog.stop()  # as if the process died right after recording
    upload_id = await upload_without_running_hash(client, b"needs processing")
    before = (await client.get(f"{API}/{upload_id}")).json()
    assert (before["processed"], before["sha256"]) == (False, None)
    # The id queued for processing dies with the worker's process (stop drops the queue);
    # without this, the restarted worker sometimes processed it before the sweep looked.
    await catalog.stop()
    catalog.start()
    assert (await sweep(client))["requeued"] == 0  # too recent to be called lost
    clock.now += 601
    assert (await sweep(client))["requeued"] == 1
    await catalog.drain()
    after = (await client.get(f"{API}/{upload_id}")).json()
    assert after["processed"] is True
    assert after["sha256"] == hashlib.sha256(b"needs processing").hexdigest()


async def test_a_tus_delete_removes_the_record_from_lists(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, b"short-lived")
    assert (await client.get(API)).json()["total_count"] == 1
    assert (await client.delete(f"http://test/files/{upload_id}")).status_code == 204
    assert (await client.get(API)).json()["total_count"] == 0
    assert (await client.get(f"{API}/{upload_id}")).status_code == 404
