"""Ids, keys and tokens in paths must match whole: a trailing ``%0a`` names nothing.

A ``$``-anchored pattern also matches before a final newline, and the base64 decoder skips
characters outside its alphabet, so ``<id>%0a`` used to act on ``<id>`` (a DELETE deleted
it). Every route that takes an id, a key or a token from the path is driven here.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import ORIGIN, SECRET, bearer
from tests.apphttp import serving
from tusserver.settings import Settings

API = f"{ORIGIN}/api/v1"
ALICE = bearer("alice")


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, media_probe=False, jwt_secret=SECRET)
    async with serving(settings) as client:
        client.headers.update(ALICE)
        yield client


async def tus_upload(http: httpx.AsyncClient, data: bytes, *, partial: bool = False) -> str:
    headers = {
        "Upload-Length": str(len(data)),
        "Content-Type": "application/offset+octet-stream",
        "Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode(),
    }
    if partial:
        headers["Upload-Concat"] = "partial"
    created = await http.post(f"{ORIGIN}/files/", content=data, headers=headers)
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[1]


async def test_tus_and_rest_upload_ids_with_a_trailing_newline_are_404(
    http: httpx.AsyncClient,
) -> None:
    unfinished = (await http.post(f"{API}/uploads/init", json=_init())).json()["upload_id"]
    finished = await tus_upload(http, b"hello")
    for method, url in [
        ("DELETE", f"{API}/uploads/{unfinished}%0a"),
        ("GET", f"{API}/uploads/{unfinished}%0a/status"),
        ("HEAD", f"{ORIGIN}/files/{unfinished}%0a"),
        ("DELETE", f"{ORIGIN}/files/{unfinished}%0a"),
        ("GET", f"{ORIGIN}/files/{finished}%0a"),
        ("GET", f"{API}/files/{finished}%0a"),
        ("DELETE", f"{API}/files/{finished}%0a"),
        ("GET", f"{API}/files/{finished}%0a/thumbnail"),
        ("GET", f"{API}/files/by-key/{finished}.bin%0a"),
        ("GET", f"{API}/files/by-key/{finished}%0a.bin"),
    ]:
        response = await http.request(method, url)
        assert response.status_code == 404, (method, url, response.status_code)
    # Both uploads are untouched.
    assert (await http.get(f"{API}/uploads/{unfinished}/status")).status_code == 200
    assert (await http.get(f"{API}/files/{finished}")).status_code == 200
    assert (await http.get(f"{API}/files/by-key/{finished}.bin")).status_code == 200


def _init() -> dict[str, Any]:
    return {"filename": "a.txt", "file_size": 5, "content_type": "text/plain"}


async def test_direct_upload_ids_with_a_trailing_newline_are_404(
    http: httpx.AsyncClient,
) -> None:
    single = {"filename": "a.txt", "content_type": "text/plain", "file_size": 3}
    presigned = (await http.post(f"{API}/uploads/presigned", json=single)).json()["upload_id"]
    multi = {"filename": "a.mp4", "content_type": "video/mp4", "file_size": 10}
    multipart = (await http.post(f"{API}/uploads/multipart", json=multi)).json()["upload_id"]
    for method, url in [
        ("GET", f"{API}/uploads/presigned/{presigned}%0a"),
        ("POST", f"{API}/uploads/presigned/{presigned}%0a/abort"),
        ("GET", f"{API}/uploads/multipart/{multipart}%0a"),
        ("POST", f"{API}/uploads/multipart/{multipart}%0a/abort"),
    ]:
        response = await http.request(method, url)
        assert response.status_code == 404, (method, url, response.status_code)
    # A part number is validated as a number: "1\n" is not one.
    part = await http.get(f"{API}/uploads/multipart/{multipart}/parts/1%0a")
    assert part.status_code == 422
    assert (await http.get(f"{API}/uploads/presigned/{presigned}")).status_code == 200
    assert (await http.get(f"{API}/uploads/multipart/{multipart}")).status_code == 200


async def test_signed_tokens_with_a_trailing_newline_are_refused(
    http: httpx.AsyncClient,
) -> None:
    file_id = await tus_upload(http, b"hello")
    minted = await http.post(f"{API}/delivery/download-url", json={"file_id": file_id})
    url = minted.json()["url"]
    assert (await http.get(url)).status_code == 200
    refused = await http.get(url + "%0a")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ERR_SIGNATURE_INVALID"

    multi = {"filename": "a.mp4", "content_type": "video/mp4", "file_size": 10}
    part = (await http.post(f"{API}/uploads/multipart", json=multi)).json()["parts"][0]
    assert part["url"].startswith(ORIGIN)
    response = await http.put(part["url"] + "%0a", content=b"0123456789")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ERR_SIGNATURE_INVALID"
