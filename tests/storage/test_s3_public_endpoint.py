"""``TUS_S3_PUBLIC_ENDPOINT_URL``: every presigned URL handed to a client names the public
endpoint and works when fetched there; the server's own S3 calls keep the internal one.

The setup mirrors docker compose, where the server calls ``http://minio:9000`` and a browser
on the host reaches ``http://localhost:9000``: here the server talks to moto's S3 server as
``127.0.0.1`` and clients are sent to the same server as ``localhost``, and each URL is
fetched where it points. (moto does not verify signatures, so these tests show the host and
that the URL works there. The URLs are signed by a client configured for the public endpoint
rather than rewritten after signing, because SigV4 signs the Host header: a store checking
SigV4 would refuse a URL whose host was changed.)
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from pydantic import ValidationError

from tests.apphttp import serving
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)
from tusserver.models import UploadInfo
from tusserver.runtime import runtime_of
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

SECRET = "p" * 40
ORIGIN = "http://t"
MiB = 1024 * 1024
PART = 5 * MiB


@dataclass
class Env:
    http: httpx.AsyncClient  # the app, as alice
    net: httpx.AsyncClient  # the network, as a browser: no bearer token
    internal: str  # host:port the server uses
    public: str  # host:port clients are sent to

    def assert_public(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.netloc == self.public, url
        query = parse_qs(parts.query)
        assert "Signature" in query or "X-Amz-Signature" in query, url


def public_alias(endpoint: str) -> str:
    """The same moto server under another name: ``localhost`` for ``127.0.0.1``."""
    parts = urlsplit(endpoint)
    assert parts.hostname == "127.0.0.1", endpoint
    return f"{parts.scheme}://localhost:{parts.port}"


@contextlib.asynccontextmanager
async def environment(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Env]:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key.upper(), value)
    bucket = f"pub-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS).create_bucket(
        Bucket=bucket
    )
    public = public_alias(endpoint)
    settings = Settings(
        data_dir=tmp_path,
        jwt_secret=SECRET,
        media_probe=False,
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_public_endpoint_url=public,
        s3_prefix="up/",
        max_size=1024 * MiB,
    )
    async with serving(settings) as http, httpx.AsyncClient(timeout=30) as net:
        http.headers["Authorization"] = f"Bearer {mint_token(SECRET, 'alice')}"
        yield Env(http, net, urlsplit(endpoint).netloc, urlsplit(public).netloc)


@pytest.fixture
async def env(
    moto_s3_endpoint: str,  # noqa: F811  (fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Env]:
    async with environment(moto_s3_endpoint, tmp_path, monkeypatch) as found:
        yield found


async def tus_upload(env: Env, data: bytes) -> str:
    name = base64.b64encode(b"holiday.mp4").decode()
    created = await env.http.post(
        f"{ORIGIN}/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"filename {name},filetype dmlkZW8vbXA0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert created.status_code == 201, created.text
    return created.headers["Location"].rsplit("/", 1)[1]


async def test_download_urls_name_the_public_endpoint_and_serve_the_bytes(env: Env) -> None:
    data = os.urandom(MiB + 17)
    file_id = await tus_upload(env, data)
    minted = await env.http.post(
        f"{ORIGIN}/api/v1/delivery/download-url", json={"file_id": file_id}
    )
    assert minted.status_code == 200, minted.text
    url = minted.json()["url"]
    env.assert_public(url)
    fetched = await env.net.get(url)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == data


async def test_a_single_presigned_put_goes_to_the_public_endpoint(env: Env) -> None:
    data = b"a direct upload, straight to S3"
    created = await env.http.post(
        f"{ORIGIN}/api/v1/uploads/presigned",
        json={"filename": "note.txt", "content_type": "text/plain", "file_size": len(data)},
    )
    assert created.status_code == 201, created.text
    answer = created.json()
    env.assert_public(answer["upload_url"])
    put = await env.net.request(
        answer["method"], answer["upload_url"], content=data, headers=answer["headers"]
    )
    assert put.status_code == 200, put.text
    done = await env.http.post(f"{ORIGIN}/api/v1/uploads/presigned/{answer['upload_id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["size"] == len(data)


async def test_multipart_part_urls_go_to_the_public_endpoint(env: Env) -> None:
    data = os.urandom(PART + 1000)
    created = await env.http.post(
        f"{ORIGIN}/api/v1/uploads/multipart",
        json={
            "filename": "movie.mp4",
            "file_size": len(data),
            "content_type": "video/mp4",
            "part_size": PART,
        },
    )
    assert created.status_code == 201, created.text
    answer = created.json()
    parts = []
    for part in answer["parts"]:
        env.assert_public(part["url"])
        n = part["part_number"]
        sent = await env.net.put(part["url"], content=data[(n - 1) * PART : n * PART])
        assert sent.status_code == 200, sent.text
        parts.append({"part_number": n, "etag": sent.headers["etag"]})
    again = await env.http.get(f"{ORIGIN}/api/v1/uploads/multipart/{answer['upload_id']}/parts/2")
    assert again.status_code == 200, again.text
    env.assert_public(again.json()["url"])
    done = await env.http.post(
        f"{ORIGIN}/api/v1/uploads/multipart/{answer['upload_id']}/complete",
        json={"parts": parts},
    )
    assert done.status_code == 200, done.text
    downloaded = await env.http.get(f"{ORIGIN}/files/{answer['upload_id']}")
    assert downloaded.content == data


async def test_the_servers_own_media_source_keeps_the_internal_endpoint(env: Env) -> None:
    # ffprobe runs beside the server: it must be given the address the server reaches.
    file_id = await tus_upload(env, b"not really a video")
    runtime = runtime_of(env.http.app)  # type: ignore[attr-defined]
    info = await runtime.components.state.get(file_id)
    assert isinstance(info, UploadInfo)
    locator = runtime.components.composer.locator
    assert locator is not None
    source = await locator.media_source(info, 60)
    assert urlsplit(source).netloc == env.internal
    assert (await env.net.get(source)).content == b"not really a video"


@pytest.mark.parametrize("value", ["localhost:9000", "/s3", "ftp://host:21"])
def test_the_public_endpoint_must_be_an_absolute_http_url(value: str) -> None:
    with pytest.raises(ValidationError, match="s3_public_endpoint_url"):
        Settings(s3_public_endpoint_url=value)
