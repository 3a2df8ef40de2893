"""The REST upload API (``/api/v1/uploads``) through the real app: init hands out a tus URL,
real tus PATCHes move the status, complete returns the catalog record, abort removes the
upload, and another user can do nothing with someone else's upload."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import API, FILES, ORIGIN, SECRET, bearer, init, init_body, patch
from tests.apphttp import serving
from tests.mediafiles import make_video
from tusserver.runtime import runtime_of
from tusserver.settings import Settings

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(Settings(data_dir=tmp_path, media_probe=False)) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_init_then_tus_patches_then_status_then_complete(http: httpx.AsyncClient) -> None:
    data = os.urandom(3000)
    created = await init(http, len(data), metadata={"title": "Holiday"})
    assert created.status_code == 201, created.text
    body = created.json()
    upload_id, url = body["upload_id"], body["upload_url"]
    assert url == f"{FILES}{upload_id}"
    assert created.headers["location"] == url
    assert body["chunk_size"] == len(data)  # 8 MiB recommended, never more than the file
    assert ISO.match(body["expires_at"])
    assert created.headers["cache-control"] == "no-store"

    # The upload is a real tus upload: HEAD sees its length and the metadata init set.
    head = await http.head(url)
    assert head.status_code == 200
    assert head.headers["upload-length"] == "3000"
    assert "filename Y2xpcC5tcDQ=" in head.headers["upload-metadata"]

    status = (await http.get(f"{API}/{upload_id}/status")).json()
    assert status == {
        "upload_id": upload_id,
        "offset": 0,
        "size": 3000,
        "completed": False,
        "expires_at": body["expires_at"],
        "percentage": 0.0,
    }
    assert (await patch(http, url, 0, data[:1000])).status_code == 204
    status = (await http.get(f"{API}/{upload_id}/status")).json()
    assert (status["offset"], status["percentage"], status["completed"]) == (1000, 33.33, False)
    assert (await patch(http, url, 1000, data[1000:])).status_code == 204
    status = (await http.get(f"{API}/{upload_id}/status")).json()
    assert status["percentage"] == 100.0
    assert status["completed"] is True
    assert status["expires_at"] is None

    done = await http.post(f"{API}/complete", json={"upload_id": upload_id})
    assert done.status_code == 200, done.text
    record = done.json()
    assert record["id"] == upload_id
    assert record["size"] == 3000
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["filename"] == "clip.mp4"
    assert record["declared_content_type"] == "video/mp4"
    assert record["metadata"]["title"] == "Holiday"
    # Completing again is harmless: the same record.
    again = await http.post(f"{API}/complete", json={"upload_id": upload_id})
    assert again.json() == record


async def test_complete_before_the_last_byte_is_409_with_the_offset(
    http: httpx.AsyncClient,
) -> None:
    body = (await init(http, 10)).json()
    await patch(http, body["upload_url"], 0, b"12345")
    early = await http.post(f"{API}/complete", json={"upload_id": body["upload_id"]})
    assert early.status_code == 409
    assert early.json()["error"] == {
        "code": "ERR_UPLOAD_INCOMPLETE",
        "message": "the upload has not received all its bytes yet",
        "details": {"offset": 5, "size": 10},
    }
    await patch(http, body["upload_url"], 5, b"67890")
    late = await http.post(f"{API}/complete", json={"upload_id": body["upload_id"]})
    assert late.status_code == 200
    assert late.json()["size"] == 10


async def test_complete_records_a_finished_upload_the_catalog_missed(
    http: httpx.AsyncClient,
) -> None:
    body = (await init(http, 4)).json()
    await patch(http, body["upload_url"], 0, b"data")
    catalog = runtime_of(http.app).catalog  # type: ignore[attr-defined]
    await catalog.repo.remove(body["upload_id"])  # as if the catalog was down at finish
    assert (await http.get(f"{ORIGIN}/api/v1/files/{body['upload_id']}")).status_code == 404
    done = await http.post(f"{API}/complete", json={"upload_id": body["upload_id"]})
    assert done.status_code == 200
    assert done.json()["sha256"] == hashlib.sha256(b"data").hexdigest()
    assert (await http.get(f"{ORIGIN}/api/v1/files/{body['upload_id']}")).status_code == 200


async def test_abort_removes_the_upload(http: httpx.AsyncClient) -> None:
    body = (await init(http, 10)).json()
    await patch(http, body["upload_url"], 0, b"123")
    aborted = await http.delete(f"{API}/{body['upload_id']}")
    assert aborted.status_code == 204
    assert aborted.content == b""
    gone = await http.get(f"{API}/{body['upload_id']}/status")
    assert gone.status_code == 404
    assert error_code(gone) == "ERR_UPLOAD_NOT_FOUND"
    assert (await http.head(body["upload_url"])).status_code == 404
    assert (await http.delete(f"{API}/{body['upload_id']}")).status_code == 404
    missing = await http.post(f"{API}/complete", json={"upload_id": body["upload_id"]})
    assert missing.status_code == 404


async def test_unknown_and_malformed_ids_are_404(http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{API}/{'0' * 32}/status")).status_code == 404
    assert (await http.get(f"{API}/not-an-id/status")).status_code == 404
    assert (await http.delete(f"{API}/{'0' * 32}")).status_code == 404
    bad = await http.post(f"{API}/complete", json={"upload_id": "../../etc"})
    assert bad.status_code == 422


async def test_methods_not_served_are_405_with_allow(http: httpx.AsyncClient) -> None:
    wrong = await http.get(f"{API}/init")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert (await http.post(f"{API}/{'0' * 32}/status")).headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"file_size": 0}, "file_size"),
        ({"file_size": -5}, "file_size"),
        ({"file_size": "10"}, "file_size"),
        ({"file_size": True}, "file_size"),
        ({"file_size": 1.5}, "file_size"),
        ({"filename": ""}, "filename"),
        ({"filename": "x" * 256}, "filename"),
        ({"filename": "a\nb.mp4"}, "filename"),
        ({"filename": "   "}, "filename"),
        ({"content_type": "video"}, "content_type"),
        ({"content_type": "video/mp4; codecs=avc1"}, "content_type"),
        ({"content_type": "text/<script>"}, "content_type"),
        ({"duration_seconds": -1}, "duration_seconds"),
        ({"metadata": {"a b": "x"}}, "metadata"),
        ({"metadata": {"filename": "other.mp4"}}, "metadata"),
        ({"metadata": {"k": "v" * 4097}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(33)}}, "metadata"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_init_validation_is_422_naming_the_field(
    http: httpx.AsyncClient, changes: dict[str, Any], where: str
) -> None:
    response = await http.post(f"{API}/init", json={**init_body(10), **changes})
    assert response.status_code == 422, response.text
    assert error_code(response) == "ERR_VALIDATION"
    assert any(where in detail["loc"] for detail in response.json()["error"]["details"])
    # Never the rejected input echoed back.
    assert "<script>" not in response.text


async def test_init_bodies_that_are_not_json(http: httpx.AsyncClient) -> None:
    form = await http.post(f"{API}/init", data={"filename": "x"})
    assert form.status_code == 415
    assert error_code(form) == "ERR_JSON_REQUIRED"
    broken = await http.post(
        f"{API}/init", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    huge = await http.post(f"{API}/init", json={**init_body(10), "pad": "x" * 70_000})
    assert huge.status_code == 413


async def test_init_over_the_maximum_size_is_413(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, max_size=100)) as http:
        response = await init(http, 101)
        assert response.status_code == 413
        assert error_code(response) == "ERR_UPLOAD_SIZE_EXCEEDED"
        assert (await init(http, 100)).status_code == 201


async def test_another_user_gets_nothing_from_my_upload(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET, media_probe=False)
    async with serving(settings) as http:
        alice, bob = bearer("alice"), bearer("bob")
        assert (await init(http, 4)).status_code == 401  # no token, no upload
        body = (await init(http, 4, headers=alice)).json()
        upload_id, url = body["upload_id"], body["upload_url"]
        await patch(http, url, 0, b"abcd", headers=alice)

        attempts = [
            await http.get(f"{API}/{upload_id}/status", headers=bob),
            await http.post(f"{API}/complete", json={"upload_id": upload_id}, headers=bob),
            await http.delete(f"{API}/{upload_id}", headers=bob),
            await http.head(url, headers=bob),
        ]
        assert [r.status_code for r in attempts] == [404, 404, 404, 404]
        # Exactly what a missing upload looks like: existence is not leaked.
        missing = await http.get(f"{API}/{'0' * 32}/status", headers=bob)
        assert attempts[0].json() == missing.json()

        # Alice's upload is untouched; an admin sees it too.
        assert (await http.get(f"{API}/{upload_id}/status", headers=alice)).status_code == 200
        admin = bearer("root", admin=True)
        assert (await http.get(f"{API}/{upload_id}/status", headers=admin)).status_code == 200
        done = await http.post(f"{API}/complete", json={"upload_id": upload_id}, headers=alice)
        assert done.json()["owner"] == "alice"


async def test_init_goes_through_the_pre_create_gate(tmp_path: Path) -> None:
    # A configured hook that cannot be reached refuses creation: init included.
    settings = Settings(
        data_dir=tmp_path,
        pre_create_hook_url="http://127.0.0.1:9/hook",
        webhook_secret="w" * 32,
        pre_create_hook_timeout=2,
    )
    async with serving(settings) as http:
        response = await init(http, 10)
        assert response.status_code == 503
        assert error_code(response) == "ERR_HOOK_UNAVAILABLE"


# ---- the duration limit ---------------------------------------------------------------------


async def upload_file(http: httpx.AsyncClient, data: bytes) -> str:
    body = (await init(http, len(data))).json()
    assert (await patch(http, body["upload_url"], 0, data)).status_code == 204
    upload_id: str = body["upload_id"]
    return upload_id


async def test_a_video_longer_than_the_limit_is_refused_and_deleted(tmp_path: Path) -> None:
    long_video = make_video(tmp_path / "long.mp4", seconds=3).read_bytes()
    short_video = make_video(tmp_path / "short.mp4", seconds=1).read_bytes()
    settings = Settings(data_dir=tmp_path / "data", max_duration_seconds=2)
    async with serving(settings) as http:
        refused = await upload_file(http, long_video)
        response = await http.post(f"{API}/complete", json={"upload_id": refused})
        assert response.status_code == 422
        assert error_code(response) == "ERR_DURATION_EXCEEDED"
        assert "at most 2 s" in response.json()["error"]["message"]
        # Remembered: status and a second complete say the same; the file is gone.
        status = await http.get(f"{API}/{refused}/status")
        assert (status.status_code, error_code(status)) == (422, "ERR_DURATION_EXCEEDED")
        again = await http.post(f"{API}/complete", json={"upload_id": refused})
        assert error_code(again) == "ERR_DURATION_EXCEEDED"
        assert (await http.get(f"{ORIGIN}/api/v1/files/{refused}")).status_code == 404

        accepted = await upload_file(http, short_video)
        response = await http.post(f"{API}/complete", json={"upload_id": accepted})
        assert response.status_code == 200, response.text
        assert 0.5 < response.json()["media"]["duration_seconds"] <= 2

        # A duration declared at init is checked at once.
        declared = await init(http, 10, duration_seconds=2.5)
        assert (declared.status_code, error_code(declared)) == (422, "ERR_DURATION_EXCEEDED")
