"""Delivery through HTTP, on local storage and on moto S3 with Redis: the bytes behind every
kind of URL equal the upload; keys, ownership, lifetimes, signatures, one-time tokens and the
quota all hold."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from tests.apphttp import serving
from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

SECRET = "s" * 40
API = "http://t/api/v1/delivery"
MiB = 1024 * 1024


def auth(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, admin=admin)}"}


@dataclass
class Env:
    http: httpx.AsyncClient
    clock: Clock
    backend: str
    data: bytes
    file_id: str
    storage_key: str

    async def fetch(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET a minted URL as a download app would: no bearer token."""
        if url.startswith("http://t/"):
            return await self.http.get(url, headers={"Authorization": "", **(headers or {})})
        async with httpx.AsyncClient() as outside:  # a real presigned S3 URL (moto)
            return await outside.get(url, headers=headers)


async def upload(http: httpx.AsyncClient, data: bytes, user: str, filename: str) -> str:
    import base64

    meta = f"filename {base64.b64encode(filename.encode()).decode()},filetype dmlkZW8vbXA0"
    response = await http.post(
        "http://t/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta,
            "Content-Type": "application/offset+octet-stream",
            **auth(user),
        },
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


def base_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data_dir": tmp_path,
        "jwt_secret": SECRET,
        "media_probe": False,
        "signing_keys": ("k" * 40,),
        "delivery_daily_quota_per_ip": 50,
        **extra,
    }


@pytest.fixture(params=["local", "s3"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Env]:
    clock = Clock()
    values = base_settings(tmp_path, **getattr(request, "param_overrides", {}))
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_s3_endpoint")
        redis = request.getfixturevalue("redis_url")
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key.upper(), value)
        bucket = f"dl-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS).create_bucket(
            Bucket=bucket
        )
        values.update(
            storage="s3",
            s3_bucket=bucket,
            s3_endpoint_url=endpoint,
            s3_prefix="up/",
            max_size=1024 * MiB,
            state="redis",
            redis_url=redis,
            redis_prefix=f"dl-{bucket}:",
        )
    data = os.urandom(MiB + 123)
    async with serving(Settings(**values), clock=clock) as http:
        file_id = await upload(http, data, "alice", "holiday.mp4")
        record = (await http.get(f"http://t/api/v1/files/{file_id}", headers=auth("alice"))).json()
        yield Env(http, clock, request.param, data, file_id, record["storage_key"])


async def mint(env: Env, user: str = "alice", **body: Any) -> httpx.Response:
    return await env.http.post(f"{API}/download-url", json=body, headers=auth(user))


async def test_the_bytes_behind_a_download_url_are_the_upload(env: Env) -> None:
    response = await mint(env, file_id=env.file_id, ttl_seconds=120)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    url = response.json()["url"]
    if env.backend == "s3":
        assert "X-Amz-Signature=" in url or "Signature=" in url
    else:
        assert urlsplit(url).path.startswith("/d/")
    download = await env.fetch(url)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).digest() == hashlib.sha256(env.data).digest()
    assert download.headers["content-type"] == "video/mp4"
    assert download.headers["content-disposition"] == 'attachment; filename="holiday.mp4"'
    by_key = await mint(env, storage_key=env.storage_key)
    assert (await env.fetch(by_key.json()["url"])).content == env.data


@pytest.mark.parametrize("env", ["local"], indirect=True)
async def test_local_urls_serve_ranges_validators_and_head(env: Env) -> None:
    url = (await mint(env, file_id=env.file_id)).json()["url"]
    part = await env.fetch(url, {"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == env.data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(env.data)}"
    etag = part.headers["etag"]
    assert (await env.fetch(url, {"If-None-Match": etag})).status_code == 304
    assert (await env.fetch(url, {"Range": f"bytes={len(env.data)}-"})).status_code == 416
    head = await env.http.head(url, headers={"Authorization": ""})
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(env.data))
    assert head.content == b""
    assert "no-store" in head.headers["cache-control"]


async def test_ttls_are_clamped(env: Env) -> None:
    now = int(env.clock())
    short = (await mint(env, file_id=env.file_id, ttl_seconds=1)).json()
    long = (await mint(env, file_id=env.file_id, ttl_seconds=86400 * 7)).json()
    default = (await mint(env, file_id=env.file_id)).json()

    def seconds(answer: dict[str, Any]) -> int:
        from datetime import datetime

        return int(datetime.fromisoformat(answer["expires_at"]).timestamp()) - now

    assert seconds(short) == 30
    assert seconds(long) == 3600
    assert seconds(default) == 300


@pytest.mark.parametrize("env", ["local"], indirect=True)
async def test_tampered_and_expired_local_urls_are_403(env: Env) -> None:
    url = (await mint(env, file_id=env.file_id, ttl_seconds=60)).json()["url"]
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    refused = await env.fetch(tampered)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ERR_SIGNATURE_INVALID"
    env.clock.now += 61
    expired = await env.fetch(url)
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "ERR_URL_EXPIRED"


async def test_a_deleted_file_has_no_download(env: Env) -> None:
    url = (await mint(env, file_id=env.file_id)).json()["url"]
    deleted = await env.http.delete(f"http://t/api/v1/files/{env.file_id}", headers=auth("alice"))
    assert deleted.status_code == 204
    assert (await mint(env, file_id=env.file_id)).status_code == 404
    if env.backend == "local":
        assert (await env.fetch(url)).status_code == 404


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "up/../x",
        "up//x",
        "up\\x",
        "up/%2e%2e/x",
        "up/x\x00",
        "/etc/passwd",
    ],
)
async def test_bad_keys_are_400(env: Env, key: str) -> None:
    response = await mint(env, storage_key=key)
    assert response.status_code == 400
    # A NUL is refused by the JSON reader itself, before the key rules look at it.
    expected = "ERR_INVALID_TEXT" if "\x00" in key else "ERR_INVALID_KEY"
    assert response.json()["error"]["code"] == expected


@pytest.mark.parametrize("env", ["s3"], indirect=True)
async def test_keys_outside_the_upload_prefix_are_400_on_s3(env: Env) -> None:
    response = await mint(env, storage_key="other/x.bin")
    assert response.status_code == 400


async def test_only_the_owner_or_an_admin_gets_a_url(env: Env) -> None:
    assert (await mint(env, "bob", file_id=env.file_id)).status_code == 404
    assert (await mint(env, "bob", storage_key=env.storage_key)).status_code == 404
    admin = await env.http.post(
        f"{API}/download-url", json={"file_id": env.file_id}, headers=auth("root", admin=True)
    )
    assert admin.status_code == 200
    anonymous = await env.http.post(f"{API}/download-url", json={"file_id": env.file_id})
    assert anonymous.status_code == 401


async def test_batches_check_each_item_alone(env: Env) -> None:
    other = await upload(env.http, b"bob's", "bob", "b.bin")
    response = await env.http.post(
        f"{API}/batch-download-urls",
        json={
            "items": [
                {"file_id": env.file_id},
                {"storage_key": "../../etc/passwd"},
                {"file_id": other},
                {"file_id": "0" * 32},
                {"file_id": env.file_id, "storage_key": env.storage_key},
            ],
            "ttl_seconds": 60,
        },
        headers=auth("alice"),
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert "url" in results[0]
    assert (await env.fetch(results[0]["url"])).content == env.data
    assert results[1]["error"]["code"] == "ERR_INVALID_KEY"
    assert results[2]["error"]["code"] == "ERR_FILE_NOT_FOUND"
    assert results[3]["error"]["code"] == "ERR_FILE_NOT_FOUND"
    assert results[4]["error"]["code"] == "ERR_VALIDATION"
    too_many = await env.http.post(
        f"{API}/batch-download-urls",
        json={"items": [{"file_id": env.file_id}] * 101},
        headers=auth("alice"),
    )
    assert too_many.status_code == 422


async def test_a_one_time_token_is_redeemed_exactly_once(env: Env) -> None:
    minted = await env.http.post(
        f"{API}/tokens", json={"file_id": env.file_id}, headers=auth("alice")
    )
    assert minted.status_code == 201
    token = minted.json()["token"]
    # Whoever holds the token redeems it, no bearer token needed.
    first = await env.http.post(f"{API}/redeem", json={"token": token})
    assert first.status_code == 200, first.text
    assert (await env.fetch(first.json()["url"])).content == env.data
    again = await env.http.post(f"{API}/redeem", json={"token": token})
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "ERR_TOKEN_NOT_FOUND"
    assert (await env.http.post(f"{API}/redeem", json={"token": "made-up"})).status_code == 404
    assert (
        await env.http.post(f"{API}/tokens", json={"file_id": env.file_id}, headers=auth("bob"))
    ).status_code == 404


async def test_fifty_concurrent_redemptions_succeed_once(env: Env) -> None:
    token = (
        await env.http.post(f"{API}/tokens", json={"file_id": env.file_id}, headers=auth("alice"))
    ).json()["token"]
    answers = await asyncio.gather(
        *(env.http.post(f"{API}/redeem", json={"token": token}) for _ in range(50))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1
    assert statuses.count(404) == 49


async def test_an_expired_one_time_token_is_gone(env: Env) -> None:
    token = (
        await env.http.post(
            f"{API}/tokens", json={"file_id": env.file_id, "ttl_seconds": 60}, headers=auth("alice")
        )
    ).json()["token"]
    env.clock.now += 61
    assert (await env.http.post(f"{API}/redeem", json={"token": token})).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        'say "hi".mp4',
        "line\r\nSet-Cookie: x=1.mp4",
        "vidéo été 🎬.mp4",
        "../../etc/passwd",
        "a\\b/c.mp4",
    ],
)
@pytest.mark.parametrize("env", ["local"], indirect=True)
async def test_attachment_names_make_safe_headers(env: Env, name: str) -> None:
    url = (await mint(env, file_id=env.file_id, attachment_filename=name)).json()["url"]
    header = (await env.fetch(url)).headers["content-disposition"]
    assert header.startswith('attachment; filename="')
    assert "\r" not in header
    assert "\n" not in header
    assert "/" not in header.split("filename*=")[0]
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert all(" " <= c <= "~" and c not in '"\\' for c in fallback)
    if not name.isascii():
        assert "filename*=UTF-8''" in header


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_the_download_quota_is_a_bucket_that_refills_over_the_day(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Past the quota, 429 with the seconds until the refused amount is back; then URLs come
    back at the daily rate, not all at once at midnight UTC (nor only then)."""
    clock = Clock()
    extra: dict[str, Any] = {}
    if backend == "redis":
        extra = {
            "state": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": f"q-{uuid.uuid4().hex[:12]}:",
        }
    settings = Settings(**base_settings(tmp_path, delivery_daily_quota_per_ip=4, **extra))
    async with serving(settings, clock=clock) as http:
        file_id = await upload(http, b"quota", "alice", "q.bin")
        body = {"file_id": file_id}
        batch = {"items": [body] * 3}
        assert (
            await http.post(f"{API}/batch-download-urls", json=batch, headers=auth("alice"))
        ).is_success
        assert (await http.post(f"{API}/download-url", json=body, headers=auth("alice"))).is_success
        refused = await http.post(f"{API}/download-url", json=body, headers=auth("alice"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "ERR_RATE_LIMITED"
        assert refused.headers["Retry-After"] == "21600"  # a day's quota of 4: one each 6 h
        two = {"items": [body] * 2}
        refused = await http.post(f"{API}/batch-download-urls", json=two, headers=auth("alice"))
        assert (refused.status_code, refused.headers["Retry-After"]) == (429, "43200")
        clock.now += 21600
        assert (await http.post(f"{API}/download-url", json=body, headers=auth("alice"))).is_success
        refused = await http.post(f"{API}/download-url", json=body, headers=auth("alice"))
        assert refused.status_code == 429


async def test_the_default_download_quota_serves_a_busy_day_at_once(tmp_path: Path) -> None:
    """With the shipped quota, one address (an office, or the app server minting for its
    users) gets links for 1,200 files in the same instant."""
    values = base_settings(tmp_path)
    del values["delivery_daily_quota_per_ip"]  # the shipped default
    async with serving(Settings(**values), clock=Clock()) as http:
        file_id = await upload(http, b"gallery", "alice", "g.bin")
        batch = {"items": [{"file_id": file_id}] * 100}
        for _ in range(12):
            minted = await http.post(
                f"{API}/batch-download-urls", json=batch, headers=auth("alice")
            )
            assert minted.status_code == 200, minted.text


async def test_a_one_time_token_survives_a_restart_of_the_embedded_server(tmp_path: Path) -> None:
    """A token minted for a day is still good after a deploy restarts the server (local
    state); it is redeemed once, whichever process redeems it."""
    data = os.urandom(1000)
    settings = Settings(**base_settings(tmp_path))
    async with serving(settings) as http:
        file_id = await upload(http, data, "alice", "notes.txt")
        minted = await http.post(f"{API}/tokens", json={"file_id": file_id}, headers=auth("alice"))
        assert minted.status_code == 201
    token = minted.json()["token"]
    async with serving(settings) as http:
        redeemed = await http.post(f"{API}/redeem", json={"token": token})
        assert redeemed.status_code == 200, redeemed.text
        assert (await http.get(redeemed.json()["url"])).content == data
    async with serving(settings) as http:
        assert (await http.post(f"{API}/redeem", json={"token": token})).status_code == 404
