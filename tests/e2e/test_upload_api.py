"""The REST upload API against the real server: init over HTTP, the bytes with tuspy to the
upload_url it handed out, then complete returns the catalog record."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from typing import Any

import pytest
from tusclient import client as tus_client

from .conftest import TusServer, request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MiB = 1024 * 1024


def call(server: TusServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    status, _, raw = request(method, f"{server.origin}{path}", headers, data)
    return status, json.loads(raw) if raw else None


def digested(server: TusServer, file_id: str, timeout: float = 10.0) -> Any:
    """The catalog record once its sha256 is known."""
    deadline = time.monotonic() + timeout
    while True:
        status, record = call(server, "GET", f"/api/v1/files/{file_id}")
        assert status == 200, record
        if record["sha256"] is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_init_tuspy_upload_complete(tus_server: TusServer) -> None:
    data = os.urandom(3 * MiB + 123)
    status, created = call(
        tus_server,
        "POST",
        "/api/v1/uploads/init",
        {"filename": "movie.mp4", "file_size": len(data), "content_type": "video/mp4"},
    )
    assert status == 201, created
    assert created["upload_url"] == f"{tus_server.base_url}{created['upload_id']}"

    uploader = tus_client.TusClient(tus_server.base_url).uploader(
        file_stream=io.BytesIO(data), url=created["upload_url"], chunk_size=1 * MiB
    )
    uploader.upload()
    assert uploader.offset == len(data)

    status, progress = call(tus_server, "GET", f"/api/v1/uploads/{created['upload_id']}/status")
    assert (status, progress["percentage"], progress["completed"]) == (200, 100.0, True)
    status, record = call(
        tus_server, "POST", "/api/v1/uploads/complete", {"upload_id": created["upload_id"]}
    )
    assert status == 200, record
    assert record["size"] == len(data)
    if tus_server.multi and record["sha256"] is None:
        # With several workers the chunks may reach different ones: the running hash is then
        # lost, and the catalog digests the stored bytes after answering (README, "sha256
        # without reading the file back").
        record = digested(tus_server, record["id"])
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["filename"] == "movie.mp4"

    status, _ = call(tus_server, "DELETE", f"/api/v1/uploads/{created['upload_id']}")
    assert status == 204
    status, _ = call(tus_server, "GET", f"/api/v1/uploads/{created['upload_id']}/status")
    assert status == 404
