"""Text a database cannot keep, through HTTP, on SQLite and on a real Postgres.

Postgres refuses NUL in text and JSON; a lone surrogate cannot be encoded for Postgres, and
once stored in SQLite it breaks every JSON answer that carries it. Both databases must
behave the same: legal tus metadata (base64 of any bytes) is normalised and still becomes a
record; what a client types into the catalog API is refused with a 400.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.apphttp import serving
from tests.catalog.test_api import API, AsUser
from tusserver.settings import Settings

ALICE = {"X-Test-User": "alice"}
ADMIN = {"X-Test-User": "root+admin"}


@pytest.fixture
async def client(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path,
        media_probe=False,
        database_url=SecretStr(database_url),
        database_migrate=True,
    )
    async with serving(settings, wrap=AsUser) as http:
        yield http


def raw_metadata(**pairs: bytes) -> str:
    return ",".join(f"{k} {base64.b64encode(v).decode()}" for k, v in pairs.items())


async def upload(http: httpx.AsyncClient, data: bytes, metadata: str) -> str:
    response = await http.post(
        "http://test/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata,
            "Content-Type": "application/offset+octet-stream",
            **ALICE,
        },
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


async def assert_lists_work(http: httpx.AsyncClient) -> None:
    for headers in (ALICE, ADMIN):
        listed = await http.get(API, headers=headers)
        assert listed.status_code == 200, listed.text


async def test_a_nul_or_invalid_utf8_file_name_still_becomes_a_record(
    client: httpx.AsyncClient,
) -> None:
    metadata = raw_metadata(filename=b"a\x00b\xff.txt", note=b"\x00", filetype=b"text/plain\x00")
    upload_id = await upload(client, b"hello", metadata)
    completed = await client.post(
        "http://test/api/v1/uploads/complete", json={"upload_id": upload_id}, headers=ALICE
    )
    assert completed.status_code == 200, completed.text
    item = completed.json()
    assert item["original_filename"] == "a\ufffdb\ufffd.txt"
    assert item["metadata"]["note"] == "\ufffd"
    assert item["size"] == 5
    assert (await client.get(f"{API}/{upload_id}", headers=ALICE)).status_code == 200
    await assert_lists_work(client)
    # Searching for the normalised form finds it.
    found = await client.get(API, params={"search": "b\ufffd"}, headers=ALICE)
    assert found.json()["total_count"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"metadata": {"k": "\\ud800"}}',
        b'{"metadata": {"\\udc00": "v"}}',
        b'{"metadata": {"k": "a\\u0000b"}}',
        b'{"filename": "x\\u0000.txt"}',
        b'{"filename": "\\udbff.txt"}',
        # Raw bytes that are not UTF-8: a surrogate encoded as UTF-8, and a stray byte.
        b'{"filename": "\xed\xa0\x80.txt"}',
        b'{"filename": "\xff.txt"}',
    ],
)
async def test_a_patch_with_unstorable_text_is_400_and_nothing_is_stored(
    client: httpx.AsyncClient, body: bytes
) -> None:
    upload_id = await upload(client, b"hello", raw_metadata(filename=b"ok.txt"))
    response = await client.patch(
        f"{API}/{upload_id}",
        content=body,
        headers={"Content-Type": "application/json", **ALICE},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "ERR_INVALID_TEXT"
    record = await client.get(f"{API}/{upload_id}", headers=ALICE)
    assert record.status_code == 200
    assert record.json()["filename"] == "ok.txt"
    await assert_lists_work(client)


async def test_a_nul_in_search_or_key_is_a_4xx_never_a_5xx(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, b"hello", raw_metadata(filename=b"ok.txt"))
    search = await client.get(f"{API}?search=%00", headers=ALICE)
    assert search.status_code == 400
    assert search.json()["error"]["code"] == "ERR_INVALID_TEXT"
    for key in (f"{upload_id}.bin%00", f"{upload_id}%00.bin", "%00"):
        by_key = await client.get(f"{API}/by-key/{key}", headers=ALICE)
        assert by_key.status_code == 404, (key, by_key.text)
    # Surrogates cannot arrive in a URL (percent-decoding replaces invalid UTF-8).
    odd = await client.get(f"{API}?search=%ED%A0%80", headers=ALICE)
    assert odd.status_code == 200
    assert odd.json()["total_count"] == 0


async def test_a_row_poisoned_before_the_fix_no_longer_breaks_lists(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """SQLite kept a lone surrogate sent in PATCH metadata (as a JSON escape); such rows
    exist in databases written by earlier versions and must not fail every list."""
    if not database_url.startswith("sqlite"):
        pytest.skip("Postgres never accepted the surrogate")
    upload_id = await upload(client, b"hello", raw_metadata(filename=b"ok.txt"))
    path = database_url.split("///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE files SET metadata = ? WHERE id = ?", ('{"k": "\\ud800"}', upload_id))
        db.commit()
    await assert_lists_work(client)
    record = await client.get(f"{API}/{upload_id}", headers=ALICE)
    assert record.json()["metadata"] == {"k": "\ufffd"}
