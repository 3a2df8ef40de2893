"""Hostile or broken draft requests get a 4xx with a stable code, never a 5xx, and never a
tus answer (docs/protocol.md, "IETF draft: detection")."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import TusServer
from tests.ietf import client
from tests.ietf.wire import send

pytestmark = pytest.mark.e2e

V8 = client.interop(8)


@pytest.fixture
def server(shared_server: TusServer) -> TusServer:
    return shared_server


CREATIONS = [
    {**V8, "Upload-Complete": "?2"},
    {**V8, "Upload-Complete": "?1;x=1"},
    {**V8, "Upload-Complete": "true"},
    {**V8, "Upload-Incomplete": "?0"},  # version 8 spells it Upload-Complete: the flag is missing
    {**V8, "Upload-Complete": "?0", "Upload-Length": "-1"},
    {**V8, "Upload-Complete": "?0", "Upload-Length": "99999999999999999999"},
    {**V8, "Upload-Complete": "?0", "Upload-Length": "1e3"},
    {**V8, "Upload-Complete": "?0", "Upload-Metadata": "filename !!!"},
    {**V8, "Upload-Complete": "?0", "Upload-Metadata": "a " + "QQ==" * 9000},
    {**V8, "Upload-Complete": "?1", "Content-Digest": "sha-256=:nope:"},
    {**V8, "Upload-Complete": "?1", "Content-Digest": "garbage"},
    {**V8, "Upload-Complete": "?1", "Repr-Digest": "sha-256=:AAAA:"},
    {"Upload-Draft-Interop-Version": "8, 8", "Upload-Complete": "?1"},
    {"Upload-Draft-Interop-Version": "\xff", "Upload-Complete": "?1"},
]


@pytest.mark.parametrize("headers", CREATIONS)
def test_bad_creations(server: TusServer, headers: dict[str, str]) -> None:
    reply = send(server.base_url, "POST", headers, b"abc")
    assert 400 <= reply.status < 500, reply
    assert reply.problem()["code"].startswith("ERR_")
    assert "tus-resumable" not in reply.headers


APPENDS = [
    {**V8, "Upload-Complete": "?0", "Content-Type": "application/partial-upload"},  # no offset
    {**client.append(8, 0, False), "Upload-Offset": "-5"},
    {**client.append(8, 0, False), "Upload-Offset": "0.0"},
    {**client.append(8, 0, False), "Upload-Offset": "99999999999999999999"},
    {**client.append(8, 0, False), "Upload-Length": "1"},  # below the offset after the append
    {**client.append(8, 0, False), "Content-Type": "application/offset+octet-stream"},
]


@pytest.mark.parametrize("headers", APPENDS)
def test_bad_appends(server: TusServer, headers: dict[str, str]) -> None:
    created = send(server.base_url, "POST", client.creation(8, False, 10), b"ab")
    location = created.headers["location"]
    reply = send(location, "PATCH", headers, b"cd")
    assert 400 <= reply.status < 500, reply
    assert reply.problem()["code"].startswith("ERR_")
    assert send(location, "HEAD", V8).headers["upload-offset"] == "2"  # nothing stored


@pytest.mark.parametrize(
    "path", ["/files/nope", "/files/../etc/passwd", "/files/%00", "/files/" + "a" * 500]
)
@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
def test_unknown_uploads(server: TusServer, path: str, method: str) -> None:
    headers = client.append(8, 0, True) if method == "PATCH" else V8
    reply = send(server.origin + path, method, headers, b"x" if method == "PATCH" else b"")
    assert reply.status in (404, 400), reply


def test_other_methods(server: TusServer) -> None:
    assert send(server.base_url, "PUT", {**V8, "Upload-Complete": "?1"}, b"x").status == 405
    created = send(server.base_url, "POST", client.creation(8, False), b"")
    reply = send(created.headers["location"], "POST", {**V8, "Upload-Complete": "?1"}, b"")
    assert reply.status == 405
    assert "PATCH" in reply.headers["allow"]
