"""Direct-to-storage uploads through the real app, on local disk and on moto's S3 server.

On S3 the part URLs are real presigned URLs, PUT with a real HTTP client to moto (records in a
real Redis); on local disk they point at the app's own signed endpoint and are PUT without a
bearer token (auth is on in every test here). Completed uploads are read back through the tus
download.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.api.support import ORIGIN, SECRET, bearer
from tests.apphttp import serving
from tests.clocks import Clock
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import CREDENTIALS, REGION, moto_s3_endpoint  # noqa: F401  (fixture)
from tests.webhook_receiver import Receiver
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

API = f"{ORIGIN}/api/v1/uploads"
MiB = 1024 * 1024
PART = 5 * MiB


@dataclass
class Env:
    backend: str
    http: httpx.AsyncClient  # the app, as alice
    anon: httpx.AsyncClient  # the app, without any token
    net: httpx.AsyncClient  # the network (moto)
    clock: Clock
    data_dir: Path
    s3: Any = None
    bucket: str = ""

    @property
    def app(self) -> Any:
        return self.http.app  # type: ignore[attr-defined]

    async def put(self, target: dict[str, Any], data: bytes, **headers: str) -> httpx.Response:
        """PUT ``data`` where a create answer says, as a browser would: no bearer token."""
        client = self.anon if target["url"].startswith(ORIGIN) else self.net
        sent = {**target.get("headers", {}), **headers}
        return await client.request(target["method"], target["url"], content=data, headers=sent)

    def multipart_keys(self) -> set[str]:
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return {u["Key"] for u in uploads}


@contextlib.asynccontextmanager
async def environment(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, **extra: Any
) -> AsyncIterator[Env]:
    options: dict[str, Any] = {
        "data_dir": tmp_path,
        "media_probe": False,
        "jwt_secret": SECRET,
        "sweep_interval": 3600,
        **extra,
    }
    s3, bucket = None, ""
    if backend == "s3":
        endpoint = request.getfixturevalue("moto_s3_endpoint")
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
        bucket = f"direct-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS)
        s3.create_bucket(Bucket=bucket)
        options = {
            "storage": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": endpoint,
            "s3_prefix": "up/",
            "max_size": 1024 * MiB,
            # Direct-upload records live in Redis beside the upload state.
            "state": "redis",
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": f"d-{uuid.uuid4().hex[:12]}:",
            **options,
        }
    clock = Clock()
    async with serving(Settings(**options), clock=clock) as http:
        http.headers.update(bearer("alice"))
        transport = http._transport  # the same app, another client: no default headers
        async with (
            httpx.AsyncClient(transport=transport) as anon,
            httpx.AsyncClient(timeout=30) as net,
        ):
            yield Env(backend, http, anon, net, clock, tmp_path, s3, bucket)


@pytest.fixture(params=["local", "s3"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(request.param, tmp_path, request) as found:
        yield found


@pytest.fixture
async def local(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    async with environment("local", tmp_path, request) as found:
        yield found


def code(response: httpx.Response) -> str:
    value: str = response.json()["error"]["code"]
    return value


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def create_multipart(env: Env, size: int, **extra: Any) -> dict[str, Any]:
    body = {
        "filename": "movie.mp4",
        "file_size": size,
        "content_type": "video/mp4",
        "part_size": PART,
        **extra,
    }
    created = await env.http.post(f"{API}/multipart", json=body)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer


async def put_parts(env: Env, created: dict[str, Any], data: bytes) -> list[dict[str, Any]]:
    size = created["part_size"]

    async def one(part: dict[str, Any]) -> dict[str, Any]:
        n = part["part_number"]
        response = await env.put(part, data[(n - 1) * size : n * size])
        assert response.status_code == 200, response.text
        return {"part_number": n, "etag": response.headers["etag"]}

    return list(await asyncio.gather(*(one(p) for p in created["parts"])))


async def download(env: Env, upload_id: str) -> bytes:
    response = await env.http.get(f"{ORIGIN}/files/{upload_id}")
    assert response.status_code == 200, response.text
    return response.content


# -- multipart ---------------------------------------------------------------------------------


async def test_multipart_upload_end_to_end(env: Env) -> None:
    data = os.urandom(3 * PART + 1234)
    created = await create_multipart(env, len(data), key_prefix="movies/2024")
    upload_id = created["upload_id"]
    assert len(upload_id) == 32
    assert (created["part_size"], created["num_parts"]) == (PART, 4)
    assert [p["part_number"] for p in created["parts"]] == [1, 2, 3, 4]
    assert {p["method"] for p in created["parts"]} == {"PUT"}
    assert created["status"] == "pending"
    assert 0 < created["expires_in"] <= 900
    # The key is the data key of the id: never anything the client chose.
    expected_key = f"up/{upload_id}" if env.backend == "s3" else f"{upload_id}.bin"
    assert created["storage_key"] == expected_key
    if env.backend == "s3":
        assert created["parts"][0]["url"].startswith(env.s3.meta.endpoint_url)
    else:
        assert created["parts"][0]["url"].startswith(f"{API}/direct-parts/")

    parts = await put_parts(env, created, data)
    for part in parts:
        n = part["part_number"]
        assert part["etag"] == f'"{md5(data[(n - 1) * PART : n * PART])}"'
    status = await env.http.get(f"{API}/multipart/{upload_id}")
    assert status.status_code == 200
    assert status.json()["status"] == "uploading"
    assert status.json()["parts_received"] == [1, 2, 3, 4]

    done = await env.http.post(f"{API}/multipart/{upload_id}/complete", json={"parts": parts})
    assert done.status_code == 200, done.text
    record = done.json()
    assert (record["id"], record["size"]) == (upload_id, len(data))
    assert record["filename"] == "movie.mp4"
    assert record["declared_content_type"] == "video/mp4"
    assert record["storage_key"] == expected_key
    assert record["metadata"]["key_prefix"] == "movies/2024"
    await runtime_of(env.app).catalog.drain()  # S3: the sha256 is computed off the request path
    stored = (await env.http.get(f"{ORIGIN}/api/v1/files/{upload_id}")).json()
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert await download(env, upload_id) == data

    assert (await env.http.get(f"{API}/multipart/{upload_id}")).json()["status"] == "completed"
    again = await env.http.post(f"{API}/multipart/{upload_id}/complete", json={"parts": parts})
    assert again.status_code == 200
    assert again.json()["id"] == upload_id
    if env.backend == "s3":
        head = env.s3.head_object(Bucket=env.bucket, Key=expected_key)
        assert head["ContentLength"] == len(data)
        assert head["ContentType"] == "video/mp4"
        assert f"up/{upload_id}" not in env.multipart_keys()
    else:
        assert not (env.data_dir / "direct" / "parts" / upload_id).exists()


async def test_a_part_url_can_be_signed_again(env: Env) -> None:
    data = os.urandom(PART + 10)
    created = await create_multipart(env, len(data))
    fresh = await env.http.get(f"{API}/multipart/{created['upload_id']}/parts/2")
    assert fresh.status_code == 200
    assert fresh.json()["part_number"] == 2
    assert (await env.put(fresh.json(), data[PART:])).status_code == 200
    for bad in ("0", "3", "x", "99999999"):
        response = await env.http.get(f"{API}/multipart/{created['upload_id']}/parts/{bad}")
        assert response.status_code == 422, bad


async def test_complete_validates_the_part_list(env: Env) -> None:
    data = os.urandom(2 * PART + 7)
    created = await create_multipart(env, len(data))
    upload_id = created["upload_id"]
    good = await put_parts(env, created, data)
    url = f"{API}/multipart/{upload_id}/complete"
    cases = {
        "missing": good[:2],
        "duplicate": [good[0], good[0], good[1], good[2]],
        "unordered": [good[1], good[0], good[2]],
        "unknown": [*good, {"part_number": 4, "etag": "abc"}],
        "empty etag": [good[0], good[1], {"part_number": 3, "etag": ""}],
        "long etag": [good[0], good[1], {"part_number": 3, "etag": "x" * 129}],
    }
    for name, parts in cases.items():
        response = await env.http.post(url, json={"parts": parts})
        assert response.status_code == 422, name
        assert code(response) == "ERR_VALIDATION"
        assert response.json()["error"]["details"], name
    for body in ({}, {"parts": []}, {"parts": [{"part_number": "one", "etag": "x"}]}):
        assert (await env.http.post(url, json=body)).status_code == 422
    # A well-formed list whose etag is not the part's: storage (or we) refuse it.
    wrong = [good[0], {"part_number": 2, "etag": f'"{md5(b"other")}"'}, good[2]]
    refused = await env.http.post(url, json={"parts": wrong})
    assert refused.status_code == 422
    assert code(refused) == "ERR_VALIDATION"
    assert (await env.http.get(f"{API}/multipart/{upload_id}")).json()["status"] == "uploading"
    assert (await env.http.post(url, json={"parts": good})).status_code == 200


async def test_abort_removes_the_parts(env: Env) -> None:
    data = os.urandom(2 * PART)
    created = await create_multipart(env, len(data))
    upload_id = created["upload_id"]
    assert (await env.put(created["parts"][0], data[:PART])).status_code == 200
    aborted = await env.http.post(f"{API}/multipart/{upload_id}/abort")
    assert aborted.status_code == 200
    assert aborted.json()["status"] == "aborted"
    if env.backend == "s3":
        assert f"up/{upload_id}" not in env.multipart_keys()
    else:
        assert not (env.data_dir / "direct" / "parts" / upload_id).exists()
        late = await env.put(created["parts"][1], data[PART:])
        assert late.status_code == 409
        assert code(late) == "ERR_INVALID_UPLOAD_STATE"
    status = await env.http.get(f"{API}/multipart/{upload_id}")
    assert status.json()["status"] == "aborted"
    parts = [{"part_number": 1, "etag": "a"}, {"part_number": 2, "etag": "b"}]
    late_complete = await env.http.post(
        f"{API}/multipart/{upload_id}/complete", json={"parts": parts}
    )
    assert late_complete.status_code == 409
    assert code(late_complete) == "ERR_INVALID_UPLOAD_STATE"
    again = await env.http.post(f"{API}/multipart/{upload_id}/abort")
    assert again.status_code == 200
    assert (await env.http.get(f"{API}/multipart/{upload_id}/parts/1")).status_code == 409


async def test_a_completed_upload_cannot_be_aborted(local: Env) -> None:
    created = (await local.http.post(f"{API}/presigned", json=_single())).json()
    await local.put(_target(created), b"abc")
    assert (await local.http.post(f"{API}/presigned/{created['upload_id']}/complete")).is_success
    refused = await local.http.post(f"{API}/presigned/{created['upload_id']}/abort")
    assert refused.status_code == 409


async def test_a_wrong_total_size_fails_the_upload(env: Env) -> None:
    data = os.urandom(PART + 100)
    created = await create_multipart(env, len(data))
    upload_id = created["upload_id"]
    first = await env.put(created["parts"][0], data[:PART])
    short_tail = data[PART:-1]
    last = await env.put(created["parts"][1], short_tail)
    if env.backend == "local":
        # Our endpoint knows each part's size and refuses a wrong one at once.
        assert last.status_code == 422
        assert code(last) == "ERR_SIZE_MISMATCH"
        return
    # S3 accepts any last part; complete finds the object too small and fails the upload.
    parts = [
        {"part_number": 1, "etag": first.headers["etag"]},
        {"part_number": 2, "etag": last.headers["etag"]},
    ]
    done = await env.http.post(f"{API}/multipart/{upload_id}/complete", json={"parts": parts})
    assert done.status_code == 422
    assert code(done) == "ERR_SIZE_MISMATCH"
    assert (await env.http.get(f"{API}/multipart/{upload_id}")).json()["status"] == "failed"
    keys = env.s3.list_objects_v2(Bucket=env.bucket).get("Contents", [])
    assert f"up/{upload_id}" not in {o["Key"] for o in keys}
    assert (await env.http.get(f"{ORIGIN}/api/v1/files/{upload_id}")).status_code == 404


async def test_local_parts_are_bounded(local: Env) -> None:
    created = await create_multipart(local, PART + 10)
    too_big = await local.put(created["parts"][1], b"x" * 11)
    assert too_big.status_code == 413
    assert code(too_big) == "ERR_PAYLOAD_TOO_LARGE"
    assert not list((local.data_dir / "direct" / "parts" / created["upload_id"]).iterdir())


# -- presigned single PUT ----------------------------------------------------------------------


def _single(**extra: Any) -> dict[str, Any]:
    return {"filename": "notes.txt", "content_type": "text/plain", **extra}


def _target(created: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": created["upload_url"],
        "method": created["method"],
        "headers": created["headers"],
    }


async def test_presigned_single_put(env: Env) -> None:
    created = await env.http.post(f"{API}/presigned", json=_single(key_prefix="docs"))
    assert created.status_code == 201, created.text
    body = created.json()
    upload_id = body["upload_id"]
    assert body["headers"]["Content-Type"] == "text/plain"
    assert body["method"] == "PUT"
    assert 0 < body["expires_in"] <= 900
    assert body["storage_key"] == (f"up/{upload_id}" if env.backend == "s3" else f"{upload_id}.bin")

    early = await env.http.post(f"{API}/presigned/{upload_id}/complete")
    assert early.status_code == 409
    assert code(early) == "ERR_UPLOAD_INCOMPLETE"

    # The type is part of the signature: another one is refused (S3: 403; us: 415).
    wrong = await env.put(_target(body), b"hello", **{"Content-Type": "image/png"})
    assert wrong.status_code == (403 if env.backend == "s3" else 415)
    data = b"hello, direct world"
    assert (await env.put(_target(body), data)).status_code == 200
    status = (await env.http.get(f"{API}/presigned/{upload_id}")).json()
    assert (status["status"], status["parts_received"]) == ("uploading", [0])

    done = await env.http.post(f"{API}/presigned/{upload_id}/complete")
    assert done.status_code == 200, done.text
    record = done.json()
    assert (record["id"], record["size"], record["filename"]) == (upload_id, len(data), "notes.txt")
    assert record["metadata"]["key_prefix"] == "docs"
    assert await download(env, upload_id) == data


async def test_a_declared_size_is_enforced(env: Env) -> None:
    body = (await env.http.post(f"{API}/presigned", json=_single(file_size=5))).json()
    response = await env.put(_target(body), b"123456")
    if env.backend == "local":
        assert response.status_code == 413
        return
    assert response.status_code == 200  # S3 cannot bound a presigned PUT: complete does
    done = await env.http.post(f"{API}/presigned/{body['upload_id']}/complete")
    assert done.status_code == 422
    assert code(done) == "ERR_SIZE_MISMATCH"


# -- local signed URLs -------------------------------------------------------------------------


def _token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _forge(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept."""
    payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac


async def test_local_part_urls_refuse_tampering_and_expire(local: Env) -> None:
    data = os.urandom(PART + 5)
    created = await create_multipart(local, len(data))
    first = created["parts"][0]
    token = _token_of(first["url"])
    base = first["url"][: -len(token)]

    async def put(tok: str, body: bytes) -> httpx.Response:
        return await local.anon.put(base + tok, content=body)

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, _forge(token, n=2), _forge(token, u="0" * 32), "x.y", "nodot", "é"):
        response = await put(bad, data[:PART])
        assert response.status_code == 403, bad
        assert code(response) == "ERR_SIGNATURE_INVALID"
    # A part 1 URL used for the last part's bytes: refused as the wrong size.
    assert (await put(token, data[PART:])).status_code == 422

    local.clock.now += 901
    expired = await put(token, data[:PART])
    assert expired.status_code == 403
    assert code(expired) == "ERR_URL_EXPIRED"
    fresh = (await local.http.get(f"{API}/multipart/{created['upload_id']}/parts/1")).json()
    assert (await local.put(fresh, data[:PART])).status_code == 200


async def test_local_single_put_checks_the_signed_type(local: Env) -> None:
    body = (await local.http.post(f"{API}/presigned", json=_single())).json()
    url = body["upload_url"]
    assert (await local.anon.put(url, content=b"x")).status_code == 415  # no type at all
    charset = await local.anon.put(
        url, content=b"x", headers={"Content-Type": "Text/Plain; charset=utf-8"}
    )
    assert charset.status_code == 200


async def test_part_urls_never_outlive_the_upload(tmp_path: Path, request: Any) -> None:
    async with environment("local", tmp_path, request, direct_expiration=120) as local:
        created = await create_multipart(local, 10)
        assert created["expires_in"] in (119, 120)
        local.clock.now += 121
        gone = await local.put(created["parts"][0], b"0123456789")
        assert gone.status_code == 403  # the URL died with the upload
        status = await local.http.get(f"{API}/multipart/{created['upload_id']}")
        assert status.status_code == 404


# -- owners ------------------------------------------------------------------------------------


async def test_another_user_gets_404_on_every_route(env: Env) -> None:
    single = (await env.http.post(f"{API}/presigned", json=_single())).json()["upload_id"]
    multi = (await create_multipart(env, 10))["upload_id"]
    bob = bearer("bob")
    parts = {"parts": [{"part_number": 1, "etag": "x"}]}
    attempts = [
        ("GET", f"{API}/presigned/{single}", None),
        ("POST", f"{API}/presigned/{single}/complete", None),
        ("POST", f"{API}/presigned/{single}/abort", None),
        ("GET", f"{API}/multipart/{multi}", None),
        ("GET", f"{API}/multipart/{multi}/parts/1", None),
        ("POST", f"{API}/multipart/{multi}/complete", parts),
        ("POST", f"{API}/multipart/{multi}/abort", None),
        # The other kind's routes do not know the id either.
        ("GET", f"{API}/multipart/{single}", None),
        ("GET", f"{API}/presigned/{multi}", None),
    ]
    for method, url, body in attempts:
        response = await env.http.request(method, url, json=body, headers=bob)
        assert response.status_code == 404, (method, url)
        assert code(response) == "ERR_UPLOAD_NOT_FOUND"
    assert (await env.http.get(f"{API}/multipart/{multi}")).json()["status"] == "pending"
    # An admin sees everyone's uploads.
    admin = await env.http.get(f"{API}/multipart/{multi}", headers=bearer("root", admin=True))
    assert admin.status_code == 200


async def test_routes_need_a_token_except_the_part_endpoint(local: Env) -> None:
    for path in ("presigned", "multipart", "direct"):
        assert (await local.anon.post(f"{API}/{path}", json=_single())).status_code == 401


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"key_prefix": "../etc"}, "key_prefix"),
        ({"key_prefix": "/abs"}, "key_prefix"),
        ({"key_prefix": "a//b"}, "key_prefix"),
        ({"key_prefix": "Upper"}, "key_prefix"),
        ({"key_prefix": "x" * 65}, "key_prefix"),
        ({"filename": ""}, "filename"),
        ({"content_type": "video"}, "content_type"),
        ({"content_type": "video/mp4; codecs=x"}, "content_type"),
        ({"file_size": 0}, "file_size"),
        ({"part_size": PART - 1}, None),
        ({"file_size": 10_001 * PART, "part_size": PART}, None),
        ({"key": "raw/key"}, "key"),
    ],
)
async def test_create_validation(local: Env, changes: dict[str, Any], where: str | None) -> None:
    body = {"filename": "a.mp4", "file_size": 10, "content_type": "video/mp4", **changes}
    response = await local.http.post(f"{API}/multipart", json=body)
    assert response.status_code == 422, response.text
    assert code(response) == "ERR_VALIDATION"
    if where is not None:
        assert any(where in d["loc"] for d in response.json()["error"]["details"])


async def test_a_nul_in_a_filename_is_refused_by_the_json_reader(local: Env) -> None:
    body = {"filename": "a\x00b", "file_size": 10, "content_type": "video/mp4"}
    response = await local.http.post(f"{API}/multipart", json=body)
    assert response.status_code == 400, response.text
    assert code(response) == "ERR_INVALID_TEXT"


async def test_limits_and_policy_apply(tmp_path: Path, request: Any) -> None:
    extra = {"max_size": 100 * MiB, "allowed_content_types": "video"}
    async with environment("local", tmp_path, request, **extra) as local:
        big = await create_multipart_raw(local, 100 * MiB + 1)
        assert big.status_code == 413
        assert code(big) == "ERR_UPLOAD_SIZE_EXCEEDED"
        text = await local.http.post(f"{API}/presigned", json=_single())
        assert text.status_code == 415
        assert code(text) == "ERR_CONTENT_TYPE_NOT_ALLOWED"
        planned = (await create_multipart_raw(local, 100 * MiB)).json()
        assert planned["part_size"] == 16 * MiB  # TUS_S3_PART_SIZE by default
        asked = (await create_multipart_raw(local, 100 * MiB, part_size=PART)).json()
        assert (asked["part_size"], asked["num_parts"]) == (PART, 20)


async def create_multipart_raw(env: Env, size: int, **extra: Any) -> httpx.Response:
    body = {"filename": "a.mp4", "file_size": size, "content_type": "video/mp4", **extra}
    return await env.http.post(f"{API}/multipart", json=body)


async def test_idempotency_key_replays_a_create(local: Env) -> None:
    headers = {"Idempotency-Key": "create-1"}
    first = await local.http.post(f"{API}/presigned", json=_single(), headers=headers)
    second = await local.http.post(f"{API}/presigned", json=_single(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["upload_id"] == second.json()["upload_id"]
    other = await local.http.post(
        f"{API}/presigned", json=_single(filename="b.txt"), headers=headers
    )
    assert other.status_code == 422
    multi = {"Idempotency-Key": "create-2"}
    a = await local.http.post(f"{API}/multipart", json=_multi_body(), headers=multi)
    b = await local.http.post(f"{API}/multipart", json=_multi_body(), headers=multi)
    assert a.json()["upload_id"] == b.json()["upload_id"]


def _multi_body() -> dict[str, Any]:
    return {"filename": "a.mp4", "file_size": 10, "content_type": "video/mp4"}


# -- the admin's small direct upload -----------------------------------------------------------


async def test_direct_small_upload(env: Env) -> None:
    admin = bearer("root", admin=True)
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    url = f"{API}/direct?filename=pixel.png"
    stored = await env.http.post(url, content=data, headers={**admin, "Content-Type": "image/png"})
    assert stored.status_code == 201, stored.text
    record = stored.json()
    assert (record["size"], record["filename"], record["owner"]) == (len(data), "pixel.png", "root")
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["detected_content_type"] == "image/png"
    fetched = await env.http.get(f"{ORIGIN}/files/{record['id']}", headers=admin)
    assert fetched.content == data
    assert not (env.data_dir / "direct" / "parts" / record["id"]).exists()

    user = await env.http.post(url, content=data, headers={"Content-Type": "image/png"})
    assert user.status_code == 403
    assert code(user) == "ERR_FORBIDDEN"
    huge = await env.http.post(
        url, content=b"x" * (11 * MiB), headers={**admin, "Content-Type": "image/png"}
    )
    assert huge.status_code == 413
    assert code(huge) == "ERR_PAYLOAD_TOO_LARGE"
    nameless = await env.http.post(f"{API}/direct", content=b"x", headers=admin)
    assert nameless.status_code == 422


async def test_direct_small_upload_refuses_a_streamed_oversized_body(local: Env) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"y" * MiB

    admin = bearer("root", admin=True)
    response = await local.http.post(
        f"{API}/direct?filename=big.bin", content=chunks(), headers=admin
    )
    assert response.status_code == 413


# -- sweeping ----------------------------------------------------------------------------------


async def test_the_sweep_aborts_expired_uploads_and_keeps_finished_ones(
    tmp_path: Path, request: Any
) -> None:
    async with environment("local", tmp_path, request, orphan_grace=0) as local:
        stale = await create_multipart(local, PART + 1)
        await local.put(stale["parts"][0], os.urandom(PART))
        kept = (await local.http.post(f"{API}/presigned", json=_single())).json()
        await local.put(_target(kept), b"keep me")
        assert (await local.http.post(f"{API}/presigned/{kept['upload_id']}/complete")).is_success

        local.clock.now += 86400 + 1
        report = await runtime_of(local.app).sweep_job.run_once()
        assert report["direct"]["aborted"] == 1
        assert not (tmp_path / "direct" / "parts" / stale["upload_id"]).exists()
        record = json.loads(
            (tmp_path / "direct" / "records" / f"{stale['upload_id']}.json").read_text()
        )
        assert record["status"] == "aborted"
        # The finished object is a finished upload: the orphan sweep leaves it alone.
        assert report["orphans_removed"] == 0
        assert (tmp_path / f"{kept['upload_id']}.bin").read_bytes() == b"keep me"
        assert await download(local, kept["upload_id"]) == b"keep me"


async def test_s3_sweep_aborts_expired_multipart_uploads(tmp_path: Path, request: Any) -> None:
    async with environment("s3", tmp_path, request) as s3env:
        stale = await create_multipart(s3env, PART + 1)
        assert f"up/{stale['upload_id']}" in s3env.multipart_keys()
        s3env.clock.now += 86400 + 1
        report = await runtime_of(s3env.app).sweep_job.run_once()
        assert report["direct"]["aborted"] == 1
        assert f"up/{stale['upload_id']}" not in s3env.multipart_keys()


async def test_the_orphan_sweep_never_aborts_a_direct_upload_in_progress(
    tmp_path: Path, request: Any
) -> None:
    # orphan_grace 0: every multipart upload no record knows is an orphan at once.
    async with environment("s3", tmp_path, request, orphan_grace=0) as s3env:
        live = await create_multipart(s3env, PART + 1)
        orphan = uuid.uuid4().hex
        s3env.s3.create_multipart_upload(Bucket=s3env.bucket, Key=f"up/{orphan}")
        report = await runtime_of(s3env.app).sweep_job.run_once()
        assert report["orphans_removed"] == 1
        keys = s3env.multipart_keys()
        assert f"up/{live['upload_id']}" in keys
        assert f"up/{orphan}" not in keys


# -- lifecycle events --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_direct_uploads_announce_their_lifecycle(
    backend: str, tmp_path: Path, request: Any
) -> None:
    """Webhooks and metrics hear direct uploads as they hear tus ones: created, finished (with
    the size and the file's name), terminated (abort) and expired (sweep), each once."""
    async with (
        Receiver() as receiver,
        environment(
            backend,
            tmp_path,
            request,
            webhook_url=receiver.url("/events"),
            webhook_secret="w" * 32,
            metrics=True,
        ) as env,
    ):
        data = os.urandom(PART + 99)
        done = await create_multipart(env, len(data))
        parts = await put_parts(env, done, data)
        url = f"{API}/multipart/{done['upload_id']}/complete"
        assert (await env.http.post(url, json={"parts": parts})).status_code == 200
        # A retried complete answers the same and announces nothing more.
        assert (await env.http.post(url, json={"parts": parts})).status_code == 200
        dropped = (await env.http.post(f"{API}/presigned", json=_single())).json()
        aborted = await env.http.post(f"{API}/presigned/{dropped['upload_id']}/abort")
        assert aborted.status_code == 200
        stale = await create_multipart(env, PART + 1)
        env.clock.now += 86400 + 1
        assert (await runtime_of(env.app).sweep_job.run_once())["direct"]["aborted"] == 1

        await receiver.wait_count(6)
        await asyncio.sleep(0.2)  # nothing further arrives

        def kinds(upload_id: str) -> list[str]:
            return [d.type for d in receiver.deliveries if d.json["upload"]["id"] == upload_id]

        assert kinds(done["upload_id"]) == ["upload.created", "upload.finished"]
        assert kinds(dropped["upload_id"]) == ["upload.created", "upload.terminated"]
        assert kinds(stale["upload_id"]) == ["upload.created", "upload.expired"]
        assert len(receiver.deliveries) == 6
        finished = receiver.of_type("upload.finished")[0].json["upload"]
        assert (finished["length"], finished["offset"]) == (len(data), len(data))
        assert finished["owner"] == "alice"
        assert finished["metadata"]["filename"] == "movie.mp4"
        assert finished["finished_at"] is not None
        assert receiver.of_type("upload.expired")[0].json["reason"] == "expired"

        metrics = (await env.http.get(f"{ORIGIN}/metrics")).text
        assert "tus_uploads_created_total 3.0" in metrics
        assert "tus_uploads_finished_total 1.0" in metrics
        assert "tus_uploads_terminated_total 1.0" in metrics
