"""The ``http.response.informational`` extension through real uvicorn, with raw sockets.

An in-process uvicorn serves a raw ASGI app with our protocol classes (httptools, and the h11
fallback), and with stock uvicorn's httptools protocol for the host-server case. Clients are
plain sockets, so each test sees exactly which heads arrive and in which order, and sends a
body only after it read what must come first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from starlette.routing import Mount

from tests.netutil import uvicorn_on_loopback
from tusserver.app import create_app
from tusserver.edge.httpproto import protocol_class
from tusserver.edge.informational import (
    EXTENSION,
    MESSAGE_TYPE,
    InformationalError,
    send_informational,
    supported,
)
from tusserver.settings import Settings

HOST = "127.0.0.1"
TIMEOUT = 5.0


@dataclass
class Seen:
    sent: list[bool] = field(default_factory=list)  # what send_informational returned
    offered: list[bool] = field(default_factory=list)  # the scope had the extension
    refused: list[str] = field(default_factory=list)  # InformationalError messages


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        body += message["body"]
        if not message["more_body"]:
            return body


async def answer(send: Any, body: bytes) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.offered.append(supported(scope))
        query = parse_qs(scope["query_string"].decode())
        name = query.get("id", ["x"])[0].encode()
        if scope["path"] == "/after-start":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            seen.sent.append(await send_informational(scope, send, 104, [(b"location", b"/late")]))
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["path"] == "/raw":
            # The message itself, as an app that skips the helper sends it.
            await send({"type": MESSAGE_TYPE, "status": 104, "headers": [(b"location", b"/raw")]})
        elif scope["path"] == "/bad":
            await send_bad(send, query, seen)
        else:
            for status in query.get("status", ["104"]):
                headers = [
                    (b"location", b"/files/" + name),
                    (b"upload-draft-interop-version", b"6"),
                ]
                seen.sent.append(await send_informational(scope, send, int(status), headers))
        body = await read_body(receive)
        await answer(send, name + b":" + body)

    return app


async def send_bad(send: Any, query: dict[str, list[str]], seen: Seen) -> None:
    """Straight to the protocol (not through the helper), so the server's own checks run."""
    status = int(query.get("status", ["104"])[0])
    value = query.get("value", ["fine"])[0].encode().replace(b"~", b"\r\n")
    name = query.get("name", ["location"])[0].encode()
    message = {"type": MESSAGE_TYPE, "status": status, "headers": [(name, value)]}
    try:
        await send(message)
    except InformationalError as exc:
        seen.refused.append(str(exc))


async def serve(http: Any, app: Any = None) -> AsyncIterator[tuple[int, Seen]]:
    """uvicorn on loopback with ``http`` as its protocol; ``app`` (lifespan on) or the probe."""
    seen = Seen()
    lifespan = "off" if app is None else "on"
    async with uvicorn_on_loopback(app or make_app(seen), http, lifespan=lifespan) as port:
        yield port, seen


@pytest.fixture(params=["httptools", "h11"])
async def ours(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Seen]]:
    async for served in serve(protocol_class(implementation=request.param)):
        yield served


@pytest.fixture(params=["httptools", "h11"])
async def stock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Seen]]:
    async for served in serve(request.param):  # uvicorn's own classes, as a host runs them
        yield served


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[bytes, bytes]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *lines = raw[:-4].split(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 "), raw
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def final(self) -> bytes:
        """The next head must be the final 200; its body."""
        status, headers = await self.head()
        assert status == 200, (status, headers)
        length = int(headers[b"content-length"])
        return await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)

    async def nothing_more(self) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(self.reader.read(1), 0.3)


async def connect(port: int) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


@pytest.fixture
async def client(ours: tuple[int, Seen]) -> AsyncIterator[Client]:
    async for c in connect(ours[0]):
        yield c


def head(target: str, length: int, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"POST {target} HTTP/{version}", "Host: t", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_the_informational_response_arrives_before_the_body_is_read(
    ours: tuple[int, Seen], client: Client
) -> None:
    # Only the head is sent: the 104 must come without any body byte having been sent.
    await client.send(head("/upload?id=a", 5))
    status, headers = await client.head()
    assert status == 104
    assert headers[b"location"] == b"/files/a"
    assert headers[b"upload-draft-interop-version"] == b"6"
    await client.send(b"hello")
    assert await client.final() == b"a:hello"
    assert ours[1].sent == [True]
    assert ours[1].offered == [True]


async def test_the_status_line_names_104(client: Client) -> None:
    await client.send(head("/upload", 1))
    raw = await asyncio.wait_for(client.reader.readuntil(b"\r\n"), TIMEOUT)
    assert raw == b"HTTP/1.1 104 Upload Resumption Supported\r\n"


async def test_with_expect_100_continue_the_104_comes_before_the_100(client: Client) -> None:
    await client.send(head("/upload?id=e", 3, "Expect: 100-continue"))
    assert (await client.head())[0] == 104
    assert (await client.head())[0] == 100  # when the app reads the body
    await client.send(b"abc")
    assert await client.final() == b"e:abc"


async def test_an_app_that_sends_100_itself_gets_no_second_one(client: Client) -> None:
    await client.send(head("/upload?id=c&status=100&status=104", 3, "Expect: 100-continue"))
    assert (await client.head())[0] == 100
    assert (await client.head())[0] == 104
    await client.send(b"abc")
    assert await client.final() == b"c:abc"  # no second 100 before it


async def test_several_informational_responses_in_order(client: Client) -> None:
    await client.send(head("/upload?id=m&status=102&status=103&status=104", 1))
    assert [(await client.head())[0] for _ in range(3)] == [102, 103, 104]
    await client.send(b"!")
    assert await client.final() == b"m:!"


async def test_keep_alive_each_request_gets_its_own(client: Client) -> None:
    for name in ("one", "two"):
        await client.send(head(f"/upload?id={name}", 2))
        status, headers = await client.head()
        assert (status, headers[b"location"]) == (104, b"/files/" + name.encode())
        await client.send(b"xy")
        assert await client.final() == name.encode() + b":xy"
    await client.nothing_more()


async def test_pipelined_requests_each_get_theirs_before_their_answer(client: Client) -> None:
    await client.send(head("/upload?id=p1", 2) + b"aa" + head("/upload?id=p2", 2) + b"bb")
    for name, body in ((b"p1", b"aa"), (b"p2", b"bb")):
        status, headers = await client.head()
        assert (status, headers[b"location"]) == (104, b"/files/" + name)
        assert await client.final() == name + b":" + body
    await client.nothing_more()


async def test_http_10_clients_get_none(ours: tuple[int, Seen], client: Client) -> None:
    await client.send(head("/upload?id=old", 3, version="1.0") + b"abc")
    assert await client.final() == b"old:abc"
    assert ours[1].sent == [False]


async def test_http_10_the_message_itself_is_dropped(client: Client) -> None:
    await client.send(head("/raw?id=old", 3, version="1.0") + b"abc")
    assert await client.final() == b"old:abc"


async def test_after_the_response_started_it_is_dropped(
    ours: tuple[int, Seen], client: Client
) -> None:
    await client.send(head("/after-start", 0) + head("/upload?id=next", 1) + b"n")
    assert await client.final() == b"ok"
    # The next request's own 104 follows, and nothing of the dropped one came between.
    status, headers = await client.head()
    assert (status, headers[b"location"]) == (104, b"/files/next")
    assert await client.final() == b"next:n"
    assert ours[1].sent == [True, True]  # taken by the server, dropped by the protocol


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("value=a~Injected:%201", "invalid informational header value"),
        ("value=a%0Ab", "invalid informational header value"),
        ("value=a%00b", "invalid informational header value"),
        ("name=bad%20name", "invalid informational header name"),
        ("name=Content-Length&value=0", "not allowed in an informational response"),
        ("name=transfer-encoding&value=chunked", "not allowed in an informational response"),
        ("status=101", "other than 101"),
        ("status=200", "100-199"),
        ("status=99", "100-199"),
    ],
)
async def test_bad_messages_are_refused_and_nothing_is_written(
    ours: tuple[int, Seen], client: Client, query: str, reason: str
) -> None:
    await client.send(head(f"/bad?id=b&{query}", 1) + b"z")
    assert await client.final() == b"b:z"  # the first head is the final answer
    assert len(ours[1].refused) == 1
    assert reason in ours[1].refused[0]


def test_the_helper_checks_before_sending() -> None:
    async def never(message: Any) -> None:
        raise AssertionError("sent")

    scope = {"type": "http", "http_version": "1.1", "extensions": {EXTENSION: {}}}
    bad_name = [(b"bad name", b"v")]
    cases = ((104, bad_name), (101, []), (104, [("str", b"v")]), (104, [(b"a", b"b", b"c")]))
    for status, headers in cases:
        with pytest.raises(InformationalError):
            asyncio.run(send_informational(scope, never, status, headers))


async def test_stock_uvicorn_has_no_extension_and_the_helper_says_so(
    stock: tuple[int, Seen],
) -> None:
    port, seen = stock
    async for c in connect(port):
        await c.send(head("/upload?id=s", 2, "Expect: 100-continue"))
        assert (await c.head())[0] == 100
        await c.send(b"ok")
        assert await c.final() == b"s:ok"
    assert seen.offered == [False]
    assert seen.sent == [False]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_sees_104_then_100_then_the_answer(ours: tuple[int, Seen]) -> None:
    # A real client; curl adds Expect: 100-continue to bodies over 1 MiB by itself.
    body = os.urandom(2 * 1024 * 1024)
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-v",
        "--data-binary",
        "@-",
        f"http://{HOST}:{ours[0]}/upload?id=curl",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(body), 30)
    assert proc.returncode == 0, err
    statuses = [line.split()[2] for line in err.splitlines() if line.startswith(b"< HTTP/1.1 ")]
    assert statuses == [b"104", b"100", b"200"]
    assert b"> Expect: 100-continue" in err
    assert out == b"curl:" + body


async def test_through_the_real_app_and_all_its_middleware(tmp_path: Path) -> None:
    # The extension reaches an endpoint inside the app's whole middleware stack, and the 1xx
    # it sends gets out through every send wrapper, ahead of the 100 and the final answer.
    seen = Seen()
    app = create_app(Settings(data_dir=tmp_path, media_probe=False))
    app.router.routes.insert(0, Mount("/probe-1xx", app=make_app(seen)))
    async for port, _ in serve(protocol_class(), app=app):
        async for c in connect(port):
            await c.send(head("/probe-1xx/?id=app", 3, "Expect: 100-continue"))
            status, headers = await c.head()
            assert (status, headers[b"location"]) == (104, b"/files/app")
            assert (await c.head())[0] == 100
            await c.send(b"abc")
            status, headers = await c.head()
            assert status == 200
            assert b"x-request-id" in headers  # the middleware did run around it
    assert seen.offered == [True]
    assert seen.sent == [True]


async def test_stock_uvicorn_refuses_the_message_itself(stock: tuple[int, Seen]) -> None:
    # Why apps go through send_informational: sent blindly, the message is an error there.
    async for c in connect(stock[0]):
        await c.send(head("/raw?id=r", 1) + b"r")
        status, _ = await c.head()
        assert status == 500
