"""tusserver.edge.httpproto: request bodies reach the app byte for byte, through real uvicorn.

An in-process uvicorn server with our protocol class serves a raw ASGI app that hashes what
``receive()`` returns; clients are plain sockets, so the wire is exactly what each test says
(Content-Length, chunked, keep-alive with several requests, a slow reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.netutil import uvicorn_on_loopback
from tusserver.edge.httpproto import BODY_HIGH_WATER, protocol_class

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
        if scope["path"] == "/early":
            # Answers without reading the body, as a tus handler refusing a PATCH does.
            headers = [(b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 409, "headers": headers})
            await send({"type": "http.response.body", "body": b"no"})
            return
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
    async with uvicorn_on_loopback(make_app(seen), protocol_class()) as port:
        yield port, seen


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


# ---- head limits: size (431) and time (408 / close) ----------------------------------------

LIMIT = 16 * 1024
TIMEOUT = 1.0


@pytest.fixture(params=["httptools", "h11"])
async def guarded(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Seen]]:
    """A server whose protocol allows LIMIT bytes of head and TIMEOUT seconds to send it;
    with our httptools protocol and with the h11 one used when httptools is missing."""
    seen = Seen()
    cls = protocol_class(
        max_header_size=LIMIT, header_timeout=TIMEOUT, implementation=request.param
    )
    assert isinstance(cls, type)
    async with uvicorn_on_loopback(make_app(seen), cls, timeout_keep_alive=30) as port:
        yield port, seen


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it has not closed within ``seconds``."""
    return await asyncio.wait_for(reader.read(), seconds)


def get_with(header_bytes: int, *, lines: int = 1) -> bytes:
    """A GET whose ``lines`` X-Pad headers hold ``header_bytes`` bytes of value in all."""
    each = header_bytes // lines
    pads = b"".join(b"X-Pad-%d: %b\r\n" % (i, b"a" * each) for i in range(lines))
    return b"GET /x HTTP/1.1\r\nHost: t\r\n" + pads + b"\r\n"


@pytest.mark.parametrize("lines", [1, 400], ids=["one-huge-line", "many-lines"])
async def test_a_head_over_the_limit_is_answered_431_and_closed(
    guarded: tuple[int, Seen], lines: int
) -> None:
    port, seen = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(get_with(LIMIT + 100, lines=lines))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 431 "), head
        assert b"connection: close" in head.lower()
        assert body.startswith(b"ERR_HEADERS_TOO_LARGE")
        assert await closed_within(reader, 5) == b""
    finally:
        writer.close()
    assert seen.digests == []  # the app never saw it


async def test_an_endless_header_line_is_cut_off_early(guarded: tuple[int, Seen]) -> None:
    # 8 MiB of one header value, sent as the server takes it: refused once the limit (plus
    # one socket read) is past, not buffered whole.
    port, _ = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = 0
    answer = asyncio.create_task(read_answer(reader))
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\nUpload-Metadata: ")
        with contextlib.suppress(ConnectionError):
            while sent < 8 * 1024 * 1024 and not answer.done():
                writer.write(b"a" * 65536)
                await asyncio.wait_for(writer.drain(), 5)
                sent += 65536
                await asyncio.sleep(0.001)
        head, body = await answer
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert body.startswith(b"ERR_HEADERS_TOO_LARGE")
    assert sent < 1024 * 1024, sent


async def test_a_head_at_the_limit_is_served(guarded: tuple[int, Seen]) -> None:
    port, _ = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(get_with(LIMIT - 1000, lines=40))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert body == sha(b"")
    finally:
        writer.close()


async def test_stalled_heads_are_closed_after_the_timeout(guarded: tuple[int, Seen]) -> None:
    # 50 connections with half a request line or half the headers, and 10 that send nothing:
    # all closed by the server within the timeout; a normal client is served meanwhile.
    port, _ = guarded
    halves = [b"GET /x HT", b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Le"]
    stalled = []
    started = time.monotonic()
    for i in range(60):
        reader, writer = await asyncio.open_connection(HOST, port)
        if i < 50:
            writer.write(halves[i % 2])
        stalled.append((reader, writer, i < 50))
    body = os.urandom(1000)
    assert await exchange(port, post(body)) == [sha(body)]
    try:
        for reader, _, partial in stalled:
            said = await closed_within(reader, TIMEOUT + 3 - (time.monotonic() - started))
            if partial:
                assert said.startswith(b"HTTP/1.1 408 "), said
                assert b"ERR_HEADER_TIMEOUT" in said
            else:
                assert said == b""
    finally:
        for _, writer, _ in stalled:
            writer.close()
    assert time.monotonic() - started >= TIMEOUT * 0.9


async def test_a_slow_but_complete_head_within_the_timeout_is_served(
    guarded: tuple[int, Seen],
) -> None:
    port, _ = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for piece in (b"GET /x HT", b"TP/1.1\r\nHo", b"st: t\r\n", b"\r\n"):
            writer.write(piece)
            await asyncio.sleep(TIMEOUT / 5)
        head, _ = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        writer.close()


async def test_keep_alive_between_requests_is_not_cut_by_the_head_timeout(
    guarded: tuple[int, Seen],
) -> None:
    # Idle keep-alive is uvicorn's timeout_keep_alive (30 s here), not the head timeout.
    port, _ = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for _ in range(3):
            body = os.urandom(100)
            writer.write(post(body))
            head, answer = await read_answer(reader)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert answer == sha(body)
            await asyncio.sleep(TIMEOUT * 1.5)
        # ...but the next head, once begun, must still arrive in time.
        writer.write(b"GET /x HTTP/1.1\r\n")
        said = await closed_within(reader, TIMEOUT + 3)
        assert said.startswith(b"HTTP/1.1 408 "), said
    finally:
        writer.close()


async def test_a_trickling_body_of_an_answered_request_does_not_hold_the_connection(
    guarded: tuple[int, Seen],
) -> None:
    # The app answers without reading the body; a client that keeps dribbling that body has
    # the head timeout to get to its next request, then the connection is closed.
    port, _ = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        head, _ = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 409 ")
        started = time.monotonic()
        closing = asyncio.create_task(reader.read())
        with contextlib.suppress(ConnectionError):
            while not closing.done() and time.monotonic() - started < TIMEOUT * 5:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.05)
        assert closing.done()
        assert await closing == b""
        assert time.monotonic() - started < TIMEOUT + 1
    finally:
        writer.close()


async def test_a_pipelined_head_over_the_limit_ends_the_connection_after_the_answer_before_it(
    guarded: tuple[int, Seen],
) -> None:
    # The answer to the first request is not cut into by a 431: it goes out whole, then the
    # connection closes and the oversized request is never served.
    port, seen = guarded
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(post(b"first") + get_with(LIMIT + 100, lines=20))
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert body == sha(b"first")
        rest = await closed_within(reader, 5)
        assert b"HTTP/1.1 200" not in rest
    finally:
        writer.close()
    assert seen.digests == [hashlib.sha256(b"first").hexdigest()]
