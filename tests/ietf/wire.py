"""A raw-socket HTTP/1.1 client that sees interim (1xx) responses, as URLSession does.

http.client and httpx drop informational responses, so the 104 of the IETF draft can only be
seen on the wire. Each request opens its own connection; ``cut`` sends part of a body after
the 104 and drops the connection, the way a phone losing its network does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes = b""
    interim: list[Reply] = field(default_factory=list)

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == "application/problem+json", self.headers
        value: dict[str, Any] = json.loads(self.body)
        return value


def _read_head(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str]]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed mid-response: {bytes(buffer)!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _read_body(sock: socket.socket, buffer: bytearray, length: int) -> bytes:
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


def send(
    url: str,
    method: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    timeout: float = 15.0,
) -> Reply:
    """One request; the final reply with the interim ones before it."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout)
    with sock:
        all_headers = {"Host": parts.netloc, "Connection": "close", **(headers or {})}
        if "Content-Length" not in all_headers and (body or method in ("POST", "PATCH")):
            all_headers["Content-Length"] = str(len(body))
        head = f"{method} {parts.path or '/'} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in all_headers.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        buffer = bytearray()
        sock.sendall(body)
        interim: list[Reply] = []
        while True:
            status, reply_headers = _read_head(sock, buffer)
            if status < 200:
                interim.append(Reply(status, reply_headers))
                continue
            length = 0 if method == "HEAD" else int(reply_headers.get("content-length", "0"))
            return Reply(status, reply_headers, _read_body(sock, buffer, length), interim)


def cut(url: str, headers: dict[str, str], sent: bytes, *, wait: float = 3.0) -> Reply | None:
    """A POST whose connection drops after ``sent`` (of a longer announced body): the
    interim reply that arrived before the drop, or None when none did."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), wait)
    with sock:
        head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        buffer = bytearray()
        try:
            status, reply_headers = _read_head(sock, buffer)
        except (TimeoutError, ConnectionError):
            return None
        sock.sendall(sent)
        time.sleep(0.3)  # let the server store what arrived before the drop
        sock.shutdown(socket.SHUT_RDWR)
    return Reply(status, reply_headers)


def server_sends_interim() -> bool:
    """Whether the project's uvicorn protocol class offers informational responses (the
    ``http.response.informational`` extension), so a real server sends the 104."""
    for name in ("tusserver.edge.informational", "tusserver.edge.httpproto"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if "http.response.informational" in inspect.getsource(module):
            return True
    return False
