"""A draft upload's life has tus's guarantees: a finished one becomes a catalog record and
fires the webhooks; acknowledged bytes survive SIGKILL; a new request makes a stalled append
store what arrived and let go; uploads expire; metrics and logs name protocol and version."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import TusServer, request, sha256
from tests.ietf import client
from tests.ietf.wire import send
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_finished_upload_is_recorded_and_announced(
    server_factory: Callable[..., TusServer],
) -> None:
    data = b"plain text, not media\n" * 100
    async with Receiver() as receiver:
        server = await asyncio.to_thread(
            server_factory,
            TUS_WEBHOOK_URL=receiver.url(),
            TUS_WEBHOOK_SECRET="w" * 40,
            TUS_MEDIA_PROBE="false",
        )
        headers = {
            **client.creation(8, True, len(data)),
            "Content-Type": "text/plain",
            "Content-Disposition": 'inline; filename="notes.txt"',
        }
        created = await asyncio.to_thread(send, server.base_url, "POST", headers, data)
        assert created.status == 201
        upload_id = created.headers["location"].rsplit("/", 1)[1]
        await receiver.wait_for(lambda seen: any(d.type == "upload.finished" for d in seen))
    finished = receiver.of_type("upload.finished")[0].json
    assert upload_id in json.dumps(finished)

    deadline = time.monotonic() + 30
    while True:
        status, _, body = await asyncio.to_thread(
            request, "GET", server.origin + "/api/v1/files?page_size=50"
        )
        assert status == 200
        items = json.loads(body)["items"]
        if items and items[0]["processed"]:
            break
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.2)
    (item,) = items
    assert item["id"] == upload_id
    assert item["filename"] == "notes.txt"
    assert item["size"] == len(data)
    assert item["sha256"] == sha256(data)


def test_acknowledged_bytes_survive_sigkill(
    backend_server_factory: Callable[..., TusServer],
) -> None:
    server = backend_server_factory()
    created = send(server.base_url, "POST", client.creation(6, False, 3000), b"a" * 1000)
    location = created.headers["location"]
    appended = send(location, "PATCH", client.append(6, 1000, False), b"b" * 1000)
    assert appended.status == 204
    server.kill()
    server.start()
    head = send(location, "HEAD", client.interop(6))
    assert head.headers["upload-offset"] == "2000"
    last = send(location, "PATCH", client.append(6, 2000, True), b"c" * 1000)
    assert last.status == 204
    assert send(location, "GET").body == b"a" * 1000 + b"b" * 1000 + b"c" * 1000


def test_a_new_request_makes_a_stalled_append_let_go(
    backend_server_factory: Callable[..., TusServer],
) -> None:
    server = backend_server_factory()
    created = send(server.base_url, "POST", client.creation(8, False, 10_000), b"")
    location = created.headers["location"]
    parts = urlsplit(location)
    # An append whose connection stalls after 3000 of 10000 bytes, as a phone going into a
    # tunnel: the server only sees silence.
    stalled = socket.create_connection((parts.hostname, parts.port), 10)
    with stalled:
        headers = {**client.append(8, 0, True), "Content-Length": "10000", "Host": parts.netloc}
        head = f"PATCH {parts.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        stalled.sendall((head + "\r\n").encode() + b"x" * 3000)
        time.sleep(0.5)
        started = time.monotonic()
        offset = send(location, "HEAD", client.interop(8))
        # Answered at once (not after a read timeout), with what the stalled request stored.
        assert time.monotonic() - started < 2.5
        assert offset.status == 204
        assert offset.headers["upload-offset"] == "3000"
    rest = send(location, "PATCH", client.append(8, 3000, True), b"y" * 7000)
    assert rest.status == 204
    assert client.says_complete(8, rest.headers)


def test_uploads_expire(backend_server_factory: Callable[..., TusServer]) -> None:
    server = backend_server_factory(TUS_EXPIRATION="2", TUS_SWEEP_INTERVAL="0.5")
    created = send(server.base_url, "POST", client.creation(8, False), b"abc")
    assert "max-age=" in created.headers["upload-limit"]
    age = int(created.headers["upload-limit"].split("max-age=")[1].split(",")[0])
    assert 0 < age <= 2
    time.sleep(3)
    head = send(created.headers["location"], "HEAD", client.interop(8))
    assert head.status == 404


def test_metrics_and_logs_name_protocol_and_version(
    server_factory: Callable[..., TusServer],
) -> None:
    server = server_factory()
    send(server.base_url, "POST", client.creation(3, True), b"abc")
    send(server.base_url, "POST", client.creation(8, True), b"abc")
    send(server.base_url, "POST", client.creation(None, True), b"abc")
    send(server.base_url, "POST", {"Upload-Draft-Interop-Version": "99"}, b"")
    send(server.base_url, "POST", {"Tus-Resumable": "1.0.0", "Upload-Length": "0"})
    status, _, body = request("GET", server.origin + "/metrics")
    assert status == 200
    text = body.decode()
    for protocol, code in [
        ("ietf-3", "201"),
        ("ietf-8", "201"),
        ("ietf-current", "201"),
        ("ietf-unsupported", "400"),
        ("tus-1.0.0", "201"),
    ]:
        line = f'tus_protocol_requests_total{{method="POST",protocol="{protocol}",status="{code}"}}'
        assert f"{line} 1.0" in text, (line, text)
    events = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    drafts = [(e["protocol"], e["status"]) for e in events if e.get("event") == "request.draft"]
    assert drafts == [
        ("ietf-3", 201),
        ("ietf-8", 201),
        ("ietf-current", 201),
        ("ietf-unsupported", 400),
    ]


def test_the_rest_upload_url_takes_the_draft(server_factory: Callable[..., TusServer]) -> None:
    """The REST API's upload_url is an upload URL like any other: a draft client can append."""
    server = server_factory(TUS_MEDIA_PROBE="false")
    data = b"0123456789" * 500
    init = {"filename": "r.bin", "file_size": len(data), "content_type": "application/octet-stream"}
    status, _, raw = request(
        "POST",
        server.origin + "/api/v1/uploads/init",
        {"Content-Type": "application/json"},
        json.dumps(init).encode(),
    )
    assert status == 201, raw
    created = json.loads(raw)
    url = created["upload_url"]
    head = send(url, "HEAD", client.interop(6))
    assert head.status == 204
    assert head.headers["upload-length"] == str(len(data))
    assert send(url, "PATCH", client.append(6, 0, False), data[:2000]).status == 204
    assert send(url, "PATCH", client.append(6, 2000, True), data[2000:]).status == 204
    status, _, raw = request(
        "POST",
        server.origin + "/api/v1/uploads/complete",
        {"Content-Type": "application/json"},
        json.dumps({"upload_id": created["upload_id"]}).encode(),
    )
    assert status == 200, raw
    record = json.loads(raw)
    assert record["size"] == len(data)
    assert record["sha256"] == sha256(data)


def test_an_interrupted_append_keeps_what_arrived(
    backend_server_factory: Callable[..., TusServer],
) -> None:
    server = backend_server_factory()
    created = send(server.base_url, "POST", client.creation(7, False, 100_000), b"")
    location = created.headers["location"]
    parts = urlsplit(location)
    with socket.create_connection((parts.hostname, parts.port), 10) as sock:
        headers = {**client.append(7, 0, True), "Content-Length": "100000", "Host": parts.netloc}
        head = f"PATCH {parts.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        sock.sendall((head + "\r\n").encode() + b"z" * 40_000)
        time.sleep(0.5)
    # The dropped connection's bytes are stored, and the upload is not complete.
    deadline = time.monotonic() + 5
    while True:
        reply = send(location, "HEAD", client.interop(7))
        if reply.headers["upload-offset"] == "40000" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.headers["upload-offset"] == "40000"
    assert not client.says_complete(7, reply.headers)
