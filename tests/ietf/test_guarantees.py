"""The draft's uploads keep tus's guarantees, on local storage and on S3 + Redis: an
interrupted single-request creation resumes through the 104's Location; the bytes land in the
same store, download with GET and are owned; tus 1.0 requests are unaffected."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import TusServer
from tests.ietf import client
from tests.ietf.wire import cut, send, server_sends_interim
from tusserver.security.auth import mint_token

pytestmark = pytest.mark.e2e

SECRET = "s" * 40
BACKENDS = ("local", "s3+redis")


@pytest.mark.parametrize("version", [3, 5, 6, 8])
def test_a_cut_single_request_creation_resumes_through_the_104(
    backend_server: TusServer, version: int
) -> None:
    data = bytes(range(256)) * 400  # 100 KiB
    headers = {**client.creation(version, True, len(data)), "Content-Length": str(len(data))}
    interim = cut(backend_server.base_url, headers, data[:40_000])
    if interim is None:
        if not server_sends_interim():
            pytest.skip("this server's protocol class sends no 104 yet")
        pytest.fail("no 104 before the body, though the server can send one")
    assert interim.status == 104
    location = interim.headers["location"]
    assert interim.headers["upload-draft-interop-version"] == str(version)

    head = send(location, "HEAD", client.interop(version))
    assert head.status == 204
    assert not client.says_complete(version, head.headers)
    offset = int(head.headers["upload-offset"])
    assert 0 <= offset <= 40_000

    rest = send(location, "PATCH", client.append(version, offset, True, len(data)), data[offset:])
    assert rest.status == 204, rest
    assert client.says_complete(version, rest.headers)
    assert send(location, "GET").body == data


@pytest.mark.parametrize("version", [5, 8])
def test_chunked_upload_and_cancellation_on_each_backend(
    backend_server: TusServer, version: int
) -> None:
    data = b"0123456789" * 1000
    created = send(backend_server.base_url, "POST", client.creation(version, False), data[:3000])
    assert created.status == 201, created
    location = created.headers["location"]
    offset = int(created.headers["upload-offset"])
    assert offset == 3000
    for end in (6000, len(data)):
        complete = end == len(data)
        reply = send(location, "PATCH", client.append(version, offset, complete), data[offset:end])
        assert reply.status == 204, reply
        offset = int(reply.headers["upload-offset"])
        assert client.says_complete(version, reply.headers) == complete
    head = send(location, "HEAD", client.interop(version))
    # The length became known when the completing append ended.
    assert head.headers["upload-length"] == str(len(data))
    assert send(location, "GET").body == data

    other = send(backend_server.base_url, "POST", client.creation(version, False), b"abc")
    gone = send(other.headers["location"], "DELETE", client.interop(version))
    assert gone.status == 204
    assert send(other.headers["location"], "HEAD", client.interop(version)).status == 404


def test_tus_requests_are_unaffected(server_factory: Callable[..., TusServer]) -> None:
    server = server_factory()
    tus = {"Tus-Resumable": "1.0.0"}
    created = send(server.base_url, "POST", {**tus, "Upload-Length": "3"})
    assert created.status == 201
    assert created.headers["tus-resumable"] == "1.0.0"
    assert "upload-complete" not in created.headers
    location = created.headers["location"]
    # Tus-Resumable wins even when a draft header is present.
    patch = {
        **tus,
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Upload-Complete": "?1",
    }
    reply = send(location, "PATCH", patch, b"abc")
    assert reply.status == 204
    assert reply.headers["tus-resumable"] == "1.0.0"
    head = send(location, "HEAD", tus)
    assert head.status == 200
    assert head.headers["upload-offset"] == "3"
    # Neither protocol's headers: still tus's 412.
    assert send(server.base_url, "POST", {"Upload-Length": "3"}).status == 412
    # A draft upload is a tus upload too: tus HEAD sees it.
    draft = send(server.base_url, "POST", client.creation(8, False), b"ab")
    seen = send(draft.headers["location"], "HEAD", tus)
    assert seen.status == 200
    assert seen.headers["upload-offset"] == "2"


def test_ownership_across_users_with_auth_on(server_factory: Callable[..., TusServer]) -> None:
    server = server_factory(TUS_JWT_SECRET=SECRET, TUS_MAX_SIZE="1000", TUS_MAX_SIZE_USER="500")
    alice = {"Authorization": f"Bearer {mint_token(SECRET, 'alice')}"}
    bob = {"Authorization": f"Bearer {mint_token(SECRET, 'bob')}"}
    assert send(server.base_url, "POST", client.creation(8, False), b"ab").status == 401
    # With a role limit the length must be known up front (the admission rule tus has too).
    created = send(server.base_url, "POST", {**client.creation(8, False, 3), **alice}, b"ab")
    assert created.status == 201
    location = created.headers["location"]
    # Another user's upload answers like a missing one, for every method.
    assert send(location, "HEAD", {**client.interop(8), **bob}).status == 404
    append = client.append(8, 2, complete=True)
    assert send(location, "PATCH", {**append, **bob}, b"c").status == 404
    assert send(location, "DELETE", {**client.interop(8), **bob}).status == 404
    assert send(location, "HEAD", {**client.interop(8), **alice}).headers["upload-offset"] == "2"
    assert send(location, "PATCH", {**append, **alice}, b"c").status == 204
    # The limit announced is the caller's own.
    user_limit = send(server.base_url, "OPTIONS", {**client.interop(8), **alice})
    assert "max-size=500" in user_limit.headers["upload-limit"]
    head = send(location, "HEAD", {**client.interop(8), **alice})
    assert "max-size=500" in head.headers["upload-limit"]
