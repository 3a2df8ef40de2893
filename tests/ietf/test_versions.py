"""Every interop version 3..8, driven over a raw socket against the real server, sending what
URLSession (or the draft) sends for that version: creation complete in one request, creation
incomplete followed by appends, offset retrieval, cancellation, and the problem answers."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.conftest import TusServer
from tests.ietf import client
from tests.ietf.client import VERSIONS
from tests.ietf.wire import Reply, send, server_sends_interim

pytestmark = pytest.mark.e2e

IANA = "https://iana.org/assignments/http-problem-types#"


@pytest.fixture(params=["local", "s3+redis"])
def server(request: pytest.FixtureRequest) -> TusServer:
    """The module's server on local storage, or on moto's S3 and a real Redis."""
    name = "shared_server" if request.param == "local" else "shared_s3_server"
    server: TusServer = request.getfixturevalue(name)
    return server


def create(
    server: TusServer,
    version: int | None,
    body: bytes,
    *,
    complete: bool,
    length: int | None = None,
) -> Reply:
    headers = client.creation(version, complete, length)
    reply = send(server.base_url, "POST", headers, body)
    assert reply.status == 201, reply
    return reply


def assert_draft_reply(reply: Reply, version: int | None) -> None:
    """The draft's shape: the interop version echoed, never tus's header."""
    assert "tus-resumable" not in reply.headers
    if version is not None:
        assert reply.headers["upload-draft-interop-version"] == str(version)


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_complete_in_one_request(server: TusServer, version: int) -> None:
    data = b"hello"
    reply = create(server, version, data, complete=True, length=len(data))
    assert_draft_reply(reply, version)
    assert client.says_complete(version, reply.headers)
    assert reply.headers["upload-offset"] == "5"
    location = reply.headers["location"]
    assert location.startswith(server.base_url)
    if server_sends_interim():
        # The 104 came before the final answer, with the same Location.
        assert [r.status for r in reply.interim] == [104]
        assert reply.interim[0].headers["location"] == location
        assert reply.interim[0].headers["upload-draft-interop-version"] == str(version)
    else:
        assert not reply.interim

    head = send(location, "HEAD", client.interop(version))
    assert head.status == 204
    assert head.headers["upload-offset"] == "5"
    assert head.headers["cache-control"] == "no-store"
    assert client.says_complete(version, head.headers)

    # A finished upload is downloadable with GET, as a tus one is.
    download = send(location, "GET")
    assert download.status == 200
    assert download.body == data

    # Appending more is refused; an empty completing append (a retry whose answer was lost)
    # is answered again.
    more = send(location, "PATCH", client.append(version, 5, complete=True), b"x")
    assert more.status == 400
    assert more.problem()["type"] == IANA + "completed-upload"
    assert more.problem()["code"] == "ERR_UPLOAD_COMPLETED"
    again = send(location, "PATCH", client.append(version, 5, complete=True), b"")
    assert again.status == 204
    assert client.says_complete(version, again.headers)


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_incomplete_then_appends(server: TusServer, version: int) -> None:
    reply = create(server, version, b"he", complete=False, length=11)
    assert_draft_reply(reply, version)
    assert not client.says_complete(version, reply.headers)
    assert reply.headers["upload-offset"] == "2"
    location = reply.headers["location"]

    head = send(location, "HEAD", client.interop(version))
    assert head.status == 204
    assert_draft_reply(head, version)
    assert head.headers["upload-offset"] == "2"
    assert head.headers["cache-control"] == "no-store"
    assert not client.says_complete(version, head.headers)
    if version >= 6:
        limit = head.headers["upload-limit"]
        assert "max-size=1000000" in limit
        # The lifetime was "expires" in drafts -04/-05 and "max-age" from -06.
        assert ("expires=" if version == 6 else "max-age=") in limit
    else:
        assert "upload-limit" not in head.headers
    if version != 3:
        assert head.headers["upload-length"] == "11"

    # The wrong offset: 409 with the draft's problem type and both offsets.
    wrong = send(location, "PATCH", client.append(version, 7, complete=False), b"llo")
    assert wrong.status == 409
    assert wrong.headers["upload-offset"] == "2"
    problem = wrong.problem()
    assert problem["type"] == IANA + "mismatching-upload-offset"
    assert (problem["expected-offset"], problem["provided-offset"]) == (2, 7)
    assert not client.says_complete(version, wrong.headers)

    middle = send(location, "PATCH", client.append(version, 2, complete=False), b"llo ")
    assert middle.status == 204, middle
    assert middle.headers["upload-offset"] == "6"
    assert not client.says_complete(version, middle.headers)

    last = send(location, "PATCH", client.append(version, 6, complete=True, length=11), b"world")
    assert last.status == 204, last
    assert client.says_complete(version, last.headers)
    download = send(location, "GET")
    assert download.body == b"hello world"


@pytest.mark.parametrize("version", VERSIONS)
def test_cancellation(server: TusServer, version: int) -> None:
    location = create(server, version, b"abc", complete=False).headers["location"]
    gone = send(location, "DELETE", client.interop(version))
    assert gone.status == 204
    assert_draft_reply(gone, version)
    head = send(location, "HEAD", client.interop(version))
    assert head.status == 404


@pytest.mark.parametrize("version", VERSIONS)
def test_digest_mismatch_stores_nothing(server: TusServer, version: int) -> None:
    location = create(server, version, b"", complete=False).headers["location"]
    bad = client.content_digest(b"something else")
    wrong = send(location, "PATCH", {**client.append(version, 0, complete=False), **bad}, b"abc")
    assert wrong.status == 400
    assert wrong.problem()["code"] == "ERR_CHECKSUM_MISMATCH"
    head = send(location, "HEAD", client.interop(version))
    assert head.headers["upload-offset"] == "0"

    good = client.content_digest(b"abc")
    right = send(location, "PATCH", {**client.append(version, 0, complete=True), **good}, b"abc")
    assert right.status == 204
    assert client.says_complete(version, right.headers)


@pytest.mark.parametrize("version", VERSIONS)
def test_options_announce_limits_where_the_version_has_them(
    server: TusServer, version: int
) -> None:
    reply = send(server.base_url, "OPTIONS", client.interop(version))
    assert reply.status == 200
    assert_draft_reply(reply, version)
    if version >= 6:
        assert "max-size=1000000" in reply.headers["upload-limit"]
    else:
        assert "upload-limit" not in reply.headers
    assert (reply.headers.get("accept-patch") == "application/partial-upload") == (version >= 8)


@pytest.mark.parametrize("version", VERSIONS)
def test_what_each_version_requires_of_an_append(server: TusServer, version: int) -> None:
    location = create(server, version, b"", complete=False).headers["location"]
    # From interop 6 an append must be application/partial-upload.
    plain = {
        **client.append(version, 0, complete=False),
        "Content-Type": "application/octet-stream",
    }
    reply = send(location, "PATCH", plain, b"ab")
    assert reply.status == (415 if version >= 6 else 204), reply
    offset = 0 if version >= 6 else 2
    # From interop 7 the completion flag is required; before, a missing one means "complete".
    no_flag = client.append(version, offset, complete=True)
    del no_flag["Upload-Incomplete" if version == 3 else "Upload-Complete"]
    reply = send(location, "PATCH", no_flag, b"cd")
    if version >= 7:
        assert reply.status == 400
        assert reply.problem()["code"] == "ERR_UPLOAD_COMPLETE_REQUIRED"
    else:
        assert reply.status == 204, reply
        assert client.says_complete(version, reply.headers)


@pytest.mark.parametrize("value", ["9", "2", "abc", "-1", "6, 7"])
def test_an_unsupported_interop_version_is_a_400_not_tus(server: TusServer, value: str) -> None:
    headers = {"Upload-Draft-Interop-Version": value, "Upload-Complete": "?1"}
    reply = send(server.base_url, "POST", headers, b"abc")
    assert reply.status == 400
    assert reply.problem()["code"] == "ERR_UNSUPPORTED_INTEROP_VERSION"
    assert "tus-resumable" not in reply.headers
    assert not reply.interim  # never a 104 to a version we do not speak


def test_a_request_without_interop_version_gets_the_current_draft(server: TusServer) -> None:
    reply = create(server, None, b"hi", complete=False)
    assert "upload-draft-interop-version" not in reply.headers
    assert not reply.interim  # the draft forbids the 104 without an interop version
    assert reply.headers["upload-complete"] == "?0"
    location = reply.headers["location"]
    last = send(location, "PATCH", client.append(None, 2, complete=True), b"!")
    assert last.status == 204
    assert last.headers["upload-complete"] == "?1"
    head = send(location, "HEAD", {"Upload-Complete": "?1"})
    assert head.headers["upload-length"] == "3"


@pytest.mark.parametrize("version", VERSIONS)
def test_creation_refusals(server: TusServer, version: int) -> None:
    # Over TUS_MAX_SIZE: 413, with the limits where the version has Upload-Limit.
    over = {**client.creation(version, False), "Upload-Length": "2000000"}
    big = send(server.base_url, "POST", over, b"")
    assert big.status == 413
    assert big.problem()["code"] == "ERR_UPLOAD_SIZE_EXCEEDED"
    assert ("max-size=1000000" in big.headers.get("upload-limit", "")) == (version >= 6)
    # A completing creation whose Upload-Length disagrees with its content.
    if version != 3:
        wrong = send(server.base_url, "POST", client.creation(version, True, 4), b"abc")
        assert wrong.status == 400
        assert wrong.problem()["type"] == IANA + "inconsistent-upload-length"
    # No completion field: the draft's creation needs one.
    bare = send(server.base_url, "POST", client.interop(version), b"abc")
    assert bare.status == 400
    assert bare.problem()["code"] == "ERR_UPLOAD_COMPLETE_REQUIRED"


def test_a_completion_field_sent_twice_with_two_values_is_refused(server: TusServer) -> None:
    head = (
        "POST /files/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?0\r\nUpload-Complete: ?1\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (Connection: close)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"ERR_DUPLICATE_HEADER" in answer


def test_each_request_is_answered_in_its_own_version(server: TusServer) -> None:
    """Apple's tests resume a version 5 or 6 upload with a version 3 HEAD."""
    location = create(server, 6, b"ab", complete=False, length=5).headers["location"]
    head = send(location, "HEAD", client.interop(3))
    assert head.status == 204
    assert head.headers["upload-draft-interop-version"] == "3"
    assert head.headers["upload-incomplete"] == "?1"
    assert "upload-complete" not in head.headers
    assert "upload-limit" not in head.headers
    last = send(location, "PATCH", client.append(6, 2, complete=True, length=5), b"cde")
    assert last.status == 204
    assert last.headers["upload-complete"] == "?1"


@pytest.mark.parametrize("version", [3, 8])
def test_104_and_100_continue(server: TusServer, version: int) -> None:
    """With ``Expect: 100-continue`` the 104 still comes, and so does the 100 (the draft: a
    104 does not replace it), before the final answer."""
    if not server_sends_interim():
        pytest.skip("this server's protocol class sends no 104 yet")
    headers = {**client.creation(version, True, 5), "Expect": "100-continue"}
    reply = send(server.base_url, "POST", headers, b"hello")
    assert reply.status == 201
    assert [r.status for r in reply.interim] == [104, 100]
    assert reply.interim[0].headers["location"] == reply.headers["location"]


@pytest.mark.parametrize("field", ["Content-Digest", "Repr-Digest"])
def test_a_single_request_creation_is_verified_all_or_nothing(
    server: TusServer, field: str
) -> None:
    digest = client.content_digest(b"hello")["Content-Digest"]
    good = {**client.creation(8, True, 5), field: digest}
    created = send(server.base_url, "POST", good, b"hello")
    assert created.status == 201
    assert created.headers["upload-complete"] == "?1"
    bad = {**client.creation(8, True, 5), field: digest}
    refused = send(server.base_url, "POST", bad, b"jello")
    assert refused.status == 400
    assert refused.problem()["code"] == "ERR_CHECKSUM_MISMATCH"
    assert "location" not in refused.headers
    if refused.interim:  # the 104 named an upload; the refusal removed it
        gone = send(refused.interim[0].headers["location"], "HEAD", client.interop(8))
        assert gone.status == 404
