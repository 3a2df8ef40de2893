"""Checksummed PATCHes on a store that cannot roll back: verified on a spool, then stored."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from tests.apphttp import opened
from tests.asgi_harness import call
from tusserver.app import create_app
from tusserver.compose import build_components
from tusserver.settings import Settings

TUS = {"Tus-Resumable": "1.0.0"}
BODY = b"hello world" * 100_000  # about 1 MiB


def sha1(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.fixture
async def app(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)
    components = build_components(settings)
    # The shape of an S3 store: everything but the ability to take bytes back.
    no_rollback = replace(components, composer=replace(components.composer, truncater=None))
    async with opened(create_app(settings, components=no_rollback)) as app:
        yield app


async def create(app) -> str:  # type: ignore[no-untyped-def]
    reply = await call(app, "POST", "/files/", {**TUS, "Upload-Length": str(2 * len(BODY))})
    return reply.headers["location"].rsplit("/", 1)[1]


def patch_headers(offset: int, checksum: str) -> dict[str, str]:
    return {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": checksum,
    }


async def test_checksum_is_still_advertised(app) -> None:  # type: ignore[no-untyped-def]
    reply = await call(app, "OPTIONS", "/files/")
    assert "checksum" in reply.headers["tus-extension"].split(",")


async def test_matching_chunk_is_stored(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    parts = [BODY[i : i + 65536] for i in range(0, len(BODY), 65536)]
    reply = await call(app, "PATCH", f"/files/{upload_id}", patch_headers(0, sha1(BODY)), parts)
    assert reply.status == 204
    assert reply.headers["upload-offset"] == str(len(BODY))
    assert (tmp_path / f"{upload_id}.bin").read_bytes() == BODY
    assert list((tmp_path / "spool").iterdir()) == []  # nothing left behind


async def test_mismatch_stores_nothing(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    reply = await call(app, "PATCH", f"/files/{upload_id}", patch_headers(0, sha1(b"x")), [BODY])
    assert reply.status == 460
    head = await call(app, "HEAD", f"/files/{upload_id}", TUS)
    assert head.headers["upload-offset"] == "0"
    assert (tmp_path / f"{upload_id}.bin").read_bytes() == b""


async def test_cut_off_chunk_stores_nothing(app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upload_id = await create(app)
    headers = {**patch_headers(0, sha1(BODY)), "Content-Length": str(len(BODY))}
    await call(app, "PATCH", f"/files/{upload_id}", headers, [BODY[:1000]], ending="disconnect")
    head = await call(app, "HEAD", f"/files/{upload_id}", TUS)
    assert head.headers["upload-offset"] == "0"
