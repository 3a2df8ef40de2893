"""The catalog end to end: files uploaded with tuspy are listed with their sizes, sha256 and
(ffprobe present) durations and thumbnails; on the embedded default and on two instances
sharing S3 (moto), Redis and Postgres, where the schema comes from `tusserver migrate`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tusclient import client as tus_client

from tests.catalog.outage import Database
from tests.mediafiles import make_video
from tests.services_postgres import create_database, drop_database
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)

from .conftest import TusServer, distributed_env, request, sha256

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
MiB = 1024 * 1024


def upload_with_tuspy(server: TusServer, data: bytes, filename: str, **kwargs: Any) -> str:
    uploader = tus_client.TusClient(server.base_url).uploader(
        file_stream=io.BytesIO(data), metadata={"filename": filename}, **kwargs
    )
    uploader.upload()
    assert uploader.url is not None
    return str(uploader.url).rsplit("/", 1)[1]


def list_files(server: TusServer) -> dict[str, Any]:
    status, _, body = request("GET", server.origin + "/api/v1/files?page_size=50")
    assert status == 200, body
    return json.loads(body)


def wait_processed(server: TusServer, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = list_files(server)["items"]
        if len(items) == count and all(item["processed"] for item in items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"not processed in {timeout} s: {items}")
        time.sleep(0.2)


def three_files(tmp_path: Path) -> dict[str, bytes]:
    return {
        "clip.mp4": make_video(tmp_path / "clip.mp4", seconds=2.0).read_bytes(),
        "notes.txt": b"plain text, not media\n" * 1000,
        "blob.bin": os.urandom(6 * MiB + 123),
    }


def check_listing(server: TusServer, files: dict[str, bytes], ids: dict[str, str]) -> None:
    items = {item["filename"]: item for item in wait_processed(server, len(files))}
    assert set(items) == set(files)
    for name, data in files.items():
        item = items[name]
        assert item["id"] == ids[name]
        assert item["size"] == len(data)
        assert item["sha256"] == sha256(data)
    video = items["clip.mp4"]
    assert video["content_type"] == "video/mp4"
    assert video["media"]["duration_seconds"] == pytest.approx(2.0, abs=0.15)
    assert (video["media"]["width"], video["media"]["height"]) == (320, 240)
    assert video["media"]["fps"] == pytest.approx(25.0)
    assert video["thumbnail_url"] is not None
    status, headers, thumb = request("GET", server.origin + video["thumbnail_url"])
    assert status == 200
    assert headers["content-type"] == "image/jpeg"
    assert thumb[:3] == b"\xff\xd8\xff"
    # Not media: probed fields stay empty, nothing failed.
    assert items["notes.txt"]["media"]["duration_seconds"] is None
    assert items["blob.bin"]["thumbnail_url"] is None


def test_three_tuspy_uploads_are_listed_on_the_embedded_default(
    server_factory: Callable[..., TusServer], tmp_path: Path
) -> None:
    files = three_files(tmp_path)
    server = server_factory()
    ids = {name: upload_with_tuspy(server, data, name) for name, data in files.items()}
    check_listing(server, files, ids)
    # The catalog survives a restart (SQLite in the data dir, upgraded at startup).
    server.restart()
    assert list_files(server)["total_count"] == 3


def test_two_instances_share_the_catalog_on_postgres_and_s3(
    server_factory: Callable[..., TusServer],
    moto_s3_endpoint: str,  # noqa: F811
    redis_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    database = create_database("e2e")
    try:
        env = distributed_env(moto_s3_endpoint, redis_url, TUS_DATABASE_URL=database)
        base = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
        migrated = subprocess.run(
            [_tusserver(), "migrate"],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "revision" in migrated.stdout
        a, b = server_factory(**env), server_factory(**env)
        files = three_files(tmp_path)
        ids = {
            name: upload_with_tuspy(a, data, name, chunk_size=5 * MiB)
            for name, data in files.items()
        }
        check_listing(b, files, ids)
        video = next(i for i in list_files(a)["items"] if i["filename"] == "clip.mp4")
        assert video["storage_backend"] == "s3"
        assert video["storage_key"] == ids["clip.mp4"]
    finally:
        drop_database(database)


def _tusserver() -> str:
    import sys

    return str(Path(sys.executable).with_name("tusserver"))


def test_an_upload_finished_while_sqlite_is_broken_is_recorded_after_a_crash(
    server_factory: Callable[..., TusServer],
) -> None:
    server = server_factory(TUS_SWEEP_INTERVAL="0.5", TUS_MEDIA_PROBE="false")
    database = Database(f"sqlite+aiosqlite:///{server.data_dir / 'catalog.db'}", "sqlite")
    data = os.urandom(300_000)
    database.break_()
    file_id = upload_with_tuspy(server, data, "crash.bin")  # acknowledged, not recorded
    server.kill()  # nothing after the acknowledgement runs: no retry, no shutdown hook
    database.restore()
    server.start()
    # The restarted server's periodic sweep records it from the outbox.
    (item,) = wait_processed(server, 1, timeout=30)
    assert (item["id"], item["filename"], item["size"]) == (file_id, "crash.bin", len(data))
    assert item["sha256"] == sha256(data)


def test_an_upload_finished_while_postgres_is_down_is_recorded_by_tusserver_sweep(
    server_factory: Callable[..., TusServer],
    moto_s3_endpoint: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    url = create_database("e2e")
    database = Database(url, "postgres")
    try:
        env = distributed_env(moto_s3_endpoint, redis_url, TUS_DATABASE_URL=url)
        env["TUS_DATABASE_MIGRATE"] = "true"
        env["TUS_MEDIA_PROBE"] = "false"
        server = server_factory(**env)
        data = os.urandom(MiB + 17)
        database.break_()
        file_id = upload_with_tuspy(server, data, "outage.bin")
        server.kill()
        database.restore()
        base = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
        swept = subprocess.run(
            [_tusserver(), "sweep", "--once"],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert swept.returncode == 0, swept.stderr
        assert '"recorded": 1' in swept.stdout, swept.stdout
        server.start()
        (item,) = list_files(server)["items"]
        assert (item["id"], item["filename"], item["size"]) == (file_id, "outage.bin", len(data))
        assert item["sha256"] == sha256(data)
    finally:
        database.restore()
        drop_database(url)
