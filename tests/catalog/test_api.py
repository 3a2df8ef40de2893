"""The catalog through HTTP: uploads made over tus appear as records the caller can list,
search, page, edit and delete, and every bad request is a clear 4xx, never a 500."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.apphttp import serving
from tusserver.runtime import runtime_of
from tusserver.security.principal import SCOPE_KEY, Principal
from tusserver.settings import Settings

API = "http://test/api/v1/files"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class AsUser:
    """Test-only stand-in for the auth layer: the principal comes from ``X-Test-User``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            user = headers.get(b"x-test-user")
            if user:
                name = user.decode()
                scope[SCOPE_KEY] = Principal(name.removesuffix("+admin"), name.endswith("+admin"))
        await self.app(scope, receive, send)


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(Settings(data_dir=tmp_path, media_probe=False), wrap=AsUser) as http:
        yield http


async def upload(http: httpx.AsyncClient, data: bytes, *, user: str = "alice", **meta: str) -> str:
    response = await http.post(
        "http://test/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(**meta),
            "Content-Type": "application/offset+octet-stream",
            "X-Test-User": user,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["Upload-Offset"] == str(len(data))
    return response.headers["Location"].rsplit("/", 1)[1]


async def test_a_finished_upload_is_listed_with_size_sha256_and_sniffed_type(
    client: httpx.AsyncClient,
) -> None:
    data = PNG + b"rest"
    upload_id = await upload(client, data, filename="../../etc/pic.png", filetype="text/html")
    response = await client.get(API, headers={"X-Test-User": "alice"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["total_count"] == 1
    assert (body["page"], body["page_size"], body["total_pages"], body["has_more"]) == (
        1,
        10,
        1,
        False,
    )
    item = body["items"][0]
    assert item["id"] == upload_id
    assert item["size"] == len(data)
    assert item["sha256"] == hashlib.sha256(data).hexdigest()
    assert item["filename"] == "_.._etc_pic.png"
    assert item["original_filename"] == "../../etc/pic.png"
    # The bytes win over the declared type; the mismatch is reported.
    assert item["content_type"] == "image/png"
    assert item["declared_content_type"] == "text/html"
    assert item["content_type_mismatch"] is True
    assert item["storage_backend"] == "local"
    assert item["storage_key"] == f"{upload_id}.bin"
    assert item["metadata"]["filetype"] == "text/html"
    assert item["created_at"].endswith("Z")


async def test_the_sniffed_type_comes_from_the_streamed_bytes_not_a_read_back(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload service kept the first bytes as they streamed in; the catalog uses them
    # and the store is never read for sniffing (a spy on the real LocalStore.read).
    from tusserver.storage.local import LocalStore

    reads: list[str] = []
    real_read = LocalStore.read

    def spy(self: LocalStore, info: Any, *args: Any) -> Any:
        reads.append(info.id)
        return real_read(self, info, *args)

    monkeypatch.setattr(LocalStore, "read", spy)
    data = PNG + bytes(20_000)
    upload_id = await upload(client, data, filetype="image/png")
    response = await client.get(f"{API}/{upload_id}", headers={"X-Test-User": "alice"})
    assert response.json()["content_type"] == "image/png"
    assert reads == []


async def test_a_chunked_upload_gets_the_sha256_of_all_its_bytes(
    client: httpx.AsyncClient,
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, in four PATCHes
    created = await client.post(
        "http://test/files/",
        headers={"Upload-Length": str(len(data)), "X-Test-User": "alice"},
    )
    url = created.headers["Location"]
    step = len(data) // 4
    for offset in range(0, len(data), step):
        response = await client.patch(
            url,
            content=data[offset : offset + step],
            headers={
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "X-Test-User": "alice",
            },
        )
        assert response.status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    item = (await client.get(f"{API}/{upload_id}", headers={"X-Test-User": "alice"})).json()
    assert item["sha256"] == hashlib.sha256(data).hexdigest()
    assert item["filename"] == upload_id  # no name given


async def test_when_the_running_hash_is_lost_the_catalog_computes_it_from_storage(
    client: httpx.AsyncClient,
) -> None:
    data = b"x" * 100_000 + b"y" * 100_000
    created = await client.post(
        "http://test/files/",
        headers={"Upload-Length": str(len(data)), "X-Test-User": "alice"},
    )
    url = created.headers["Location"]
    first = await client.patch(
        url,
        content=data[:100_000],
        headers={
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "X-Test-User": "alice",
        },
    )
    assert first.status_code == 204
    # As after a restart or a PATCH served by another instance: no running hash here.
    service = runtime_of(client.app).service  # type: ignore[attr-defined]
    service.digests.discard(url.rsplit("/", 1)[1])
    second = await client.patch(
        url,
        content=data[100_000:],
        headers={
            "Upload-Offset": "100000",
            "Content-Type": "application/offset+octet-stream",
            "X-Test-User": "alice",
        },
    )
    assert second.status_code == 204
    upload_id = url.rsplit("/", 1)[1]
    catalog = runtime_of(client.app).catalog  # type: ignore[attr-defined]
    await catalog.drain()
    item = (await client.get(f"{API}/{upload_id}", headers={"X-Test-User": "alice"})).json()
    assert item["sha256"] == hashlib.sha256(data).hexdigest()
    assert item["processed"] is True


async def test_a_retried_finish_records_the_file_once(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, b"abc", filename="a.txt")
    service = runtime_of(client.app).service  # type: ignore[attr-defined]
    info = await service.get(upload_id, owner=None)
    await service.finish(info)
    await service.finish(info)
    body = (await client.get(API, headers={"X-Test-User": "alice"})).json()
    assert [item["id"] for item in body["items"]] == [upload_id]


async def test_list_pages_searches_and_sorts(client: httpx.AsyncClient) -> None:
    names = [f"clip-{n:02}.bin" for n in range(12)] + ["100% done.bin", "a_b.bin", "axb.bin"]
    for n, name in enumerate(names):
        await upload(client, b"z" * (n + 1), filename=name)
    alice = {"X-Test-User": "alice"}
    page2 = (await client.get(API, params={"page": 2, "page_size": 5}, headers=alice)).json()
    assert page2["total_count"] == 15
    assert page2["total_pages"] == 3
    assert page2["has_more"] is True
    assert len(page2["items"]) == 5
    last = (await client.get(API, params={"page": 3, "page_size": 5}, headers=alice)).json()
    assert last["has_more"] is False
    # Literal wildcards: "%" and "_" match themselves only.
    percent = (await client.get(API, params={"search": "%"}, headers=alice)).json()
    assert [i["filename"] for i in percent["items"]] == ["100% done.bin"]
    underscore = (await client.get(API, params={"search": "_"}, headers=alice)).json()
    assert [i["filename"] for i in underscore["items"]] == ["a_b.bin"]
    found = (await client.get(API, params={"search": "CLIP-1"}, headers=alice)).json()
    assert sorted(i["filename"] for i in found["items"]) == ["clip-10.bin", "clip-11.bin"]
    by_size = (
        await client.get(
            API, params={"sort_by": "size", "sort_order": "asc", "page_size": 3}, headers=alice
        )
    ).json()
    assert [i["size"] for i in by_size["items"]] == [1, 2, 3]
    by_name = (
        await client.get(API, params={"sort_by": "filename", "sort_order": "asc"}, headers=alice)
    ).json()
    assert by_name["items"][0]["filename"] == "100% done.bin"
    recent = (await client.get(f"{API}/recent", params={"limit": 2}, headers=alice)).json()
    assert [i["filename"] for i in recent["items"]] == ["axb.bin", "a_b.bin"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "abc"}, "page"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "51"}, "page_size"),
        ({"sort_by": "password"}, "sort_by"),
        ({"sort_by": "created_at; DROP TABLE files"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
        ({"search": "x" * 201}, "search"),
    ],
)
async def test_bad_list_parameters_are_422_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get(API, params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "ERR_VALIDATION"
    assert [d["loc"] for d in error["details"]] == [[field]]
    # The rejected value is not echoed back.
    assert "DROP TABLE" not in response.text


@pytest.mark.parametrize("limit", ["0", "21", "x"])
async def test_bad_recent_limits_are_422(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(f"{API}/recent", params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


async def test_another_user_gets_404_everywhere_and_an_admin_sees_all(
    client: httpx.AsyncClient,
) -> None:
    upload_id = await upload(client, b"secret", user="alice", filename="alice.txt")
    bob = {"X-Test-User": "bob"}
    assert (await client.get(API, headers=bob)).json()["total_count"] == 0
    assert (await client.get(f"{API}/recent", headers=bob)).json()["items"] == []
    for response in (
        await client.get(f"{API}/{upload_id}", headers=bob),
        await client.get(f"{API}/by-key/{upload_id}.bin", headers=bob),
        await client.patch(f"{API}/{upload_id}", json={"filename": "mine"}, headers=bob),
        await client.delete(f"{API}/{upload_id}", headers=bob),
        await client.get(f"{API}/{upload_id}/thumbnail", headers=bob),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ERR_FILE_NOT_FOUND"
    admin = {"X-Test-User": "root+admin"}
    assert (await client.get(API, headers=admin)).json()["total_count"] == 1
    assert (await client.get(f"{API}/{upload_id}", headers=admin)).status_code == 200
    # Alice still has it, untouched.
    mine = (await client.get(f"{API}/{upload_id}", headers={"X-Test-User": "alice"})).json()
    assert mine["filename"] == "alice.txt"


async def test_get_by_key_patch_and_soft_delete(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, b"hello", filename="old.txt", note="n")
    alice = {"X-Test-User": "alice"}
    by_key = await client.get(f"{API}/by-key/{upload_id}.bin", headers=alice)
    assert by_key.json()["id"] == upload_id
    patched = await client.patch(
        f"{API}/{upload_id}",
        json={"filename": "new/name.txt", "metadata": {"title": "Été", "empty": None}},
        headers=alice,
    )
    assert patched.status_code == 200
    assert patched.json()["filename"] == "new_name.txt"
    assert patched.json()["metadata"] == {"title": "Été", "empty": None}
    assert patched.json()["original_filename"] == "old.txt"
    deleted = await client.delete(f"{API}/{upload_id}", headers=alice)
    assert deleted.status_code == 204
    assert (await client.get(f"{API}/{upload_id}", headers=alice)).status_code == 404
    assert (await client.get(API, headers=alice)).json()["total_count"] == 0
    assert (await client.delete(f"{API}/{upload_id}", headers=alice)).status_code == 404


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 422, "ERR_VALIDATION"),
        ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415, "ERR_JSON_REQUIRED"),
        ({"json": {}}, 422, "ERR_VALIDATION"),
        ({"json": {"filename": ""}}, 422, "ERR_VALIDATION"),
        ({"json": {"owner": "bob"}}, 422, "ERR_VALIDATION"),
        ({"json": {"metadata": {"k": 5}}}, 422, "ERR_VALIDATION"),
        ({"json": {"metadata": {str(n): "v" for n in range(101)}}}, 422, "ERR_VALIDATION"),
        ({"json": ["filename"]}, 422, "ERR_VALIDATION"),
        (
            {
                "content": b'{"filename": "' + b"a" * 70000 + b'"}',
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "ERR_PAYLOAD_TOO_LARGE",
        ),
    ],
)
async def test_bad_patch_bodies_are_clear_4xx(
    client: httpx.AsyncClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    upload_id = await upload(client, b"x", user="local")
    response = await client.patch(f"{API}/{upload_id}", **kwargs)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nothex"),
        ("GET", "/" + "A" * 32),
        ("GET", "/" + "0" * 32),
        ("GET", "/by-key/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/by-key/%2E%2E/x.bin"),
        ("GET", "/" + "0" * 32 + "/thumbnail"),
    ],
)
async def test_unknown_ids_and_keys_are_404(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, API + path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ERR_FILE_NOT_FOUND"


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post(API)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    one = await client.put(f"{API}/{'0' * 32}")
    assert one.status_code == 405
    assert one.headers["Allow"] == "DELETE, GET, HEAD, PATCH"


def break_catalog(data_dir: Path) -> None:
    """Every catalog query now fails inside the database (as during an outage or a botched
    migration). Connections still open: aiosqlite leaks its worker thread when a connect
    fails, which would only test aiosqlite."""
    with contextlib.closing(sqlite3.connect(data_dir / "catalog.db")) as db:
        db.execute("DROP TABLE files")
        db.commit()


async def test_a_database_outage_is_503_without_internals(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    break_catalog(tmp_path)
    response = await client.get(API)
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "ERR_CATALOG_UNAVAILABLE",
        "message": "the catalog database is temporarily unavailable",
    }


async def test_the_upload_still_succeeds_when_the_catalog_is_down(
    client: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    break_catalog(tmp_path)
    upload_id = await upload(client, b"bytes survive")
    head = await client.head(f"http://test/files/{upload_id}", headers={"X-Test-User": "alice"})
    assert head.headers["Upload-Offset"] == "13"
    assert any(r.message == "listener.failed" for r in caplog.records)


Helper = Callable[..., Any]
