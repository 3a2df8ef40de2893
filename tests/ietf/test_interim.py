"""The 104 (Upload Resumption Supported) interim response: sent before the creation's body is
read when the ASGI server offers the informational-response extension, never otherwise.

Driven in-process with a scope that does (or does not) carry the extension, because which
server runs the app decides it; ``test_resume.py`` drives it on the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message

from tests.apphttp import opened
from tests.ietf import client
from tusserver.app import create_app
from tusserver.ietf.interim import INFORMATIONAL
from tusserver.settings import Settings


async def post(
    tmp_path: Path, headers: dict[str, str], body: bytes, *, extension: bool
) -> list[tuple[str, Any]]:
    """POST through the real app; the events in order: ("receive", n) and sent messages."""
    events: list[tuple[str, Any]] = []
    parts = [body]

    async def receive() -> Message:
        events.append(("receive", len(parts)))
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": False}

    async def send(message: Message) -> None:
        events.append(("send", message))

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"host", b"uploads.example"), (b"content-length", str(len(body)).encode())]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/files/",
        "raw_path": b"/files/",
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("uploads.example", 80),
    }
    if extension:
        scope["extensions"] = {INFORMATIONAL: {}}
    settings = Settings(data_dir=tmp_path, max_size=1000, media_probe=False)
    async with opened(create_app(settings)) as app:
        await app(scope, receive, send)
    return events


def sent(events: list[tuple[str, Any]]) -> list[Message]:
    return [value for kind, value in events if kind == "send"]


@pytest.mark.parametrize("version", client.VERSIONS)
async def test_the_104_comes_before_the_body_is_read(tmp_path: Path, version: int) -> None:
    events = await post(tmp_path, client.creation(version, True, 5), b"hello", extension=True)
    kind, first = events[0]
    assert kind == "send", events  # nothing was received before the 104
    assert first["type"] == INFORMATIONAL
    assert first["status"] == 104
    headers = dict(first["headers"])
    final = next(m for m in sent(events) if m["type"] == "http.response.start")
    assert final["status"] == 201
    assert headers[b"location"] == dict(final["headers"])[b"location"]
    assert headers[b"upload-draft-interop-version"] == str(version).encode()
    assert (b"upload-limit" in headers) == (version >= 6)
    if version >= 6:
        assert b"max-size=1000" in headers[b"upload-limit"]


async def test_no_104_without_the_extension(tmp_path: Path) -> None:
    events = await post(tmp_path, client.creation(8, True, 5), b"hello", extension=False)
    assert all(m["type"] != INFORMATIONAL for m in sent(events))
    final = next(m for m in sent(events) if m["type"] == "http.response.start")
    assert final["status"] == 201


async def test_no_104_without_an_interop_version(tmp_path: Path) -> None:
    events = await post(tmp_path, client.creation(None, True, 5), b"hello", extension=True)
    assert all(m["type"] != INFORMATIONAL for m in sent(events))


async def test_no_104_to_a_refused_creation(tmp_path: Path) -> None:
    # Over TUS_MAX_SIZE: refused before the upload exists, so there is nothing to announce.
    events = await post(tmp_path, client.creation(8, False, 5000), b"", extension=True)
    assert all(m["type"] != INFORMATIONAL for m in sent(events))
    final = next(m for m in sent(events) if m["type"] == "http.response.start")
    assert final["status"] == 413
