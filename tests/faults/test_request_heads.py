"""Request heads against the real ``tusserver serve``: too large (431) and too slow (closed).

Raw sockets, so the wire is exactly what each test says: 50 connections that send half a
request and stop are all closed by the server within TUS_HEADER_TIMEOUT while a normal
client is served, keep-alive connections idle between requests are not cut by it, and an
8 MB Upload-Metadata is refused before it is stored.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import TusServer

from .rawhttp import HOST, read_reply, request

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]

TIMEOUT = 2.0


def connect(server: TusServer) -> socket.socket:
    return socket.create_connection((HOST, server.port), timeout=10)


def closed_by_server(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sent until it closed; fails if it is still open at ``deadline``."""
    said = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"still open; the server said {said!r}") from None
        except ConnectionResetError:
            return said
        if not piece:
            return said
        said += piece


def test_half_sent_requests_are_closed_within_the_header_timeout(
    server_factory: Callable[..., TusServer],
) -> None:
    server = server_factory(TUS_HEADER_TIMEOUT=str(TIMEOUT))
    halves = [
        b"POST /files/ HTT",
        b"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Len",
        b"",  # connects and sends nothing
    ]
    started = time.monotonic()
    stalled = []
    for i in range(50):
        sock = connect(server)
        sock.sendall(halves[i % 3])
        stalled.append(sock)
    try:
        # Meanwhile a normal client is served, on fresh connections.
        for _ in range(3):
            reply = request("POST", server.base_url, {"Upload-Length": "10"})
            assert reply.status == 201, reply
        deadline = started + TIMEOUT + 3
        for i, sock in enumerate(stalled):
            said = closed_by_server(sock, deadline)
            if halves[i % 3]:
                assert said.startswith(b"HTTP/1.1 408 "), said
                assert b"ERR_HEADER_TIMEOUT" in said
            else:
                assert said == b""
        assert time.monotonic() - started >= TIMEOUT * 0.9
    finally:
        for sock in stalled:
            sock.close()
    # The server is fine afterwards.
    assert request("POST", server.base_url, {"Upload-Length": "10"}).status == 201


def test_keep_alive_connections_survive_idle_gaps_longer_than_the_header_timeout(
    server_factory: Callable[..., TusServer],
) -> None:
    # Idle keep-alive between requests is uvicorn's own timeout (5 s), not the head timeout.
    server = server_factory(TUS_HEADER_TIMEOUT="1")
    head = (
        b"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 3\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    with connect(server) as sock:
        for _ in range(3):
            sock.sendall(head)
            reply = read_reply(sock)
            assert reply is not None
            assert reply.status == 201, reply
            time.sleep(1.5)


def test_an_8_mb_upload_metadata_is_refused_with_431(
    server_factory: Callable[..., TusServer],
) -> None:
    server = server_factory()
    with connect(server) as sock:
        sock.sendall(
            b"POST /files/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 3\r\n"
            b"Upload-Metadata: name "
        )
        sent = 0
        try:
            while sent < 8 * 1024 * 1024:
                sock.sendall(b"QUFB" * 16384)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_reply(sock)
    assert reply is not None
    assert (reply.status, reply.code) == (431, "ERR_HEADERS_TOO_LARGE")
    # Nothing of it was stored: the state directory holds no large file.
    sizes = [p.stat().st_size for p in server.data_dir.rglob("*") if p.is_file()]
    assert max(sizes, default=0) < 1024 * 1024


@pytest.mark.parametrize("route", ["tus-patch", "json-init"])
def test_a_stalled_body_is_answered_within_the_read_timeout(
    server_factory: Callable[..., TusServer], route: str
) -> None:
    # Slow bodies are the handlers' TUS_READ_TIMEOUT, on the JSON API as on uploads; once
    # answered, the rest of the body may not keep the connection open either.
    server = server_factory(TUS_READ_TIMEOUT="1", TUS_HEADER_TIMEOUT=str(TIMEOUT))
    if route == "tus-patch":
        url = request("POST", server.base_url, {"Upload-Length": "100"}).headers["location"]
        path = url.split(str(server.port), 1)[1].encode()
        head = (
            b"PATCH %b HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            b"Content-Type: application/offset+octet-stream\r\nContent-Length: 100\r\n\r\n"
        ) % path
        part = b"x" * 10
    else:
        head = (
            b"POST /api/v1/uploads/init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        part = b'{"filename'
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(head + part)
        reply = read_reply(sock, timeout=10)
        assert reply is not None
        assert reply.code == "ERR_READ_TIMEOUT", reply
        assert time.monotonic() - started < 1 + 3
        # Closed by the head timeout, well before uvicorn's 5 s keep-alive would close it.
        assert closed_by_server(sock, time.monotonic() + TIMEOUT + 1.5) == b""
