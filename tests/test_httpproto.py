"""tusserver.httpproto: request bodies reach the app byte for byte, through real uvicorn.

An in-process uvicorn server with our protocol class serves a raw ASGI app that hashes what
``receive()`` returns; clients are plain sockets, so the wire is exactly what each test says
(Content-Length, chunked, keep-alive with several requests, a slow reader).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.netutil import free_port
from tusserver.httpproto import BODY_HIGH_WATER, protocol_class

HOST = "127.0.0.1"


@dataclass
class Seen:
    digests: list[str] = field(default_factory=list)
    sizes: list[list[int]] = field(default_factory=list)
    delay: float = 0.0
    disconnects: int = 0


def make_app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        hasher = hashlib.sha256()
        sizes: list[int] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.disconnects += 1
                return
            body = message["body"]
            assert type(body) is bytes  # ASGI says bytes, never our buffer object
            hasher.update(body)
            sizes.append(len(body))
            if not message["more_body"]:
                break
            if seen.delay:
                await asyncio.sleep(seen.delay)
        seen.digests.append(hasher.hexdigest())
        seen.sizes.append(sizes)
        digest = hasher.hexdigest().encode()
        headers = [(b"content-length", str(len(digest)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": digest})

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Seen]]:
    seen = Seen()
    port = free_port()
    config = uvicorn.Config(
        make_app(seen),
        host=HOST,
        port=port,
        http=protocol_class(),
        lifespan="off",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, seen
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, request: bytes, responses: int = 1) -> list[bytes]:
    """Send raw bytes, read ``responses`` responses; return their bodies."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        bodies = []
        for _ in range(responses):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            bodies.append(await reader.readexactly(length))
        return bodies
    finally:
        writer.close()


def post(body: bytes, *, chunked: bool = False) -> bytes:
    if not chunked:
        return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    out = [b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for start in range(0, len(body), 100_000):
        piece = body[start : start + 100_000]
        out.append(b"%x\r\n%b\r\n" % (len(piece), piece))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def test_our_protocol_is_used_when_httptools_is_there() -> None:
    cls = protocol_class()
    assert isinstance(cls, type)
    assert issubclass(cls, HttpToolsProtocol)


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 3 * 1024 * 1024 + 7])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_bodies_arrive_intact(server: tuple[int, Seen], size: int, chunked: bool) -> None:
    port, _ = server
    body = os.urandom(size)
    assert await exchange(port, post(body, chunked=chunked)) == [sha(body)]


async def test_keep_alive_requests_do_not_mix_bodies(server: tuple[int, Seen]) -> None:
    # Three requests pipelined on one connection: each body is its own, none leaks into the
    # next (the buffer object is per request).
    port, seen = server
    bodies = [os.urandom(n) for n in (200_000, 0, 1_000_001)]
    raw = b"".join(post(body, chunked=i == 1) for i, body in enumerate(bodies))
    assert await exchange(port, raw, responses=3) == [sha(b) for b in bodies]
    assert seen.digests == [hashlib.sha256(b).hexdigest() for b in bodies]


async def test_a_slow_app_gets_bounded_messages(server: tuple[int, Seen]) -> None:
    # The app takes its time between receives; reading pauses once BODY_HIGH_WATER bytes
    # wait, so no message (and no connection's buffer) grows with the body.
    port, seen = server
    seen.delay = 0.002
    body = os.urandom(8 * 1024 * 1024)
    assert await exchange(port, post(body)) == [sha(body)]
    largest = max(seen.sizes[-1])
    # One socket read (uvloop reads at most 256 KiB) may land on top of the high water mark.
    assert largest <= BODY_HIGH_WATER + 256 * 1024, largest


async def test_a_client_that_vanishes_mid_body_does_not_break_the_server(
    server: tuple[int, Seen],
) -> None:
    port, seen = server
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        sock.sendall(os.urandom(300_000))
    for _ in range(200):
        if seen.disconnects:
            break
        await asyncio.sleep(0.01)
    assert seen.disconnects == 1
    body = os.urandom(500_000)
    assert await exchange(port, post(body)) == [sha(body)]
