"""Raw-socket tus clients for the fault tests: bodies cut off after N bytes, bodies streamed
at a set pace that stop as soon as the server answers, and plain one-shot requests.

http.client cannot play these parts: it writes a whole body before it reads anything, so a
server that answers early (423, 409, 503) would leave it blocked or broken-piped without the
answer.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HOST = "127.0.0.1"
MiB = 1024 * 1024


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def code(self) -> str:
        """The ``ERR_...`` code of an error answer ('' if none)."""
        found = re.search(r"ERR_[A-Z_]+", self.body.decode("utf-8", "replace"))
        return found.group(0) if found else ""


def _address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or HOST, parts.port or 80, parts.path


def _head(method: str, url: str, headers: dict[str, str]) -> bytes:
    host, port, path = _address(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Tus-Resumable: 1.0.0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def patch_headers(offset: int, length: int, **extra: str) -> dict[str, str]:
    return {
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(length),
        **extra,
    }


def read_reply(sock: socket.socket, timeout: float = 30.0) -> Reply | None:
    """One HTTP response from ``sock`` (None if the connection ended without one)."""
    sock.settimeout(timeout)
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            piece = sock.recv(65536)
            if not piece:
                return None
            buffer += piece
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            rest += piece
        return Reply(status, headers, rest[:length])
    except (ConnectionError, TimeoutError, OSError):
        return None


def cut_off_patch(url: str, offset: int, data: bytes, sent: int) -> None:
    """Announce all of ``data`` at ``offset``, send ``sent`` bytes of it, then close the
    socket: a connection dropped mid-PATCH (sent=0: right after the headers)."""
    host, port, _ = _address(url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(_head("PATCH", url, patch_headers(offset, len(data))) + data[:sent])


@dataclass
class StreamingPatch:
    """One PATCH of ``data`` at ``offset`` over a raw socket, sent in ``block``-sized pieces at
    about ``rate`` bytes/s (None: as fast as the socket takes them). It stops sending as soon
    as the server answers, and reads that answer. Run it in a thread; ``sent`` grows as it
    goes, ``reply`` is the answer (None if the connection died without one).

    ``hold`` (if given) is waited for after ``first`` bytes, so a test can line up another
    request behind this one at a known point.
    """

    url: str
    offset: int
    data: bytes
    rate: float | None = None
    block: int = 64 * 1024
    extra: dict[str, str] = field(default_factory=dict)
    first: int = 0
    hold: threading.Event | None = None
    sent: int = 0
    reply: Reply | None = None
    error: BaseException | None = None
    first_sent: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        host, port, _ = _address(self.url)
        try:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.sendall(
                    _head(
                        "PATCH", self.url, patch_headers(self.offset, len(self.data), **self.extra)
                    )
                )
                self._send(sock)
                self.reply = read_reply(sock)
        except OSError as exc:
            self.error = exc
        finally:
            self.first_sent.set()
            self.done.set()

    def _send(self, sock: socket.socket) -> bool:
        """Send the body; True if the server answered (or hung up) before all of it went."""
        view = memoryview(self.data)
        if self.first:
            sock.sendall(view[: self.first])
            self.sent = self.first
        self.first_sent.set()
        if self.hold is not None:
            self.hold.wait(30)
        started, paced_from = time.monotonic(), self.sent
        deadline = started + 120
        sock.setblocking(False)
        try:
            while self.sent < len(self.data):
                assert time.monotonic() < deadline, "the server neither read nor answered"
                if self.rate is not None:
                    due = started + (self.sent - paced_from) / self.rate
                    if (wait := due - time.monotonic()) > 0:
                        # Not due yet: wait, but wake up for an answer.
                        if select.select([sock], [], [], wait)[0]:
                            return True
                        continue
                readable, writable, _ = select.select([sock], [sock], [], 1.0)
                if readable:
                    return True
                if not writable:
                    continue
                try:
                    self.sent += sock.send(view[self.sent : self.sent + self.block])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    return True
        finally:
            sock.setblocking(True)
        return False


def start(patch: StreamingPatch) -> threading.Thread:
    thread = threading.Thread(target=patch.run, daemon=True)
    thread.start()
    return thread


def request(
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One request on a fresh connection (http.client); header names lower-cased."""
    host, port, path = _address(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Tus-Resumable": "1.0.0", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def head(url: str) -> Reply:
    return request("HEAD", url)


def settled_offset(url: str, timeout: float = 10.0) -> int:
    """HEAD until it answers 200 (a 423 means a dying PATCH still holds the upload)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = head(url)
        if reply.status == 200:
            return int(reply.headers["upload-offset"])
        assert reply.status == 423, (reply.status, reply.headers, reply.body)
        assert time.monotonic() < deadline, "the upload stayed locked"
        time.sleep(0.05)


def finish_upload(url: str, data: bytes, chunk: int = 8 * MiB) -> None:
    """Resume like a tus client: HEAD for the offset, then PATCH the rest in chunks."""
    offset = settled_offset(url)
    while offset < len(data):
        piece = data[offset : offset + chunk]
        reply = request("PATCH", url, patch_headers(offset, len(piece)), piece, timeout=60)
        assert reply.status == 204, (reply.status, reply.headers, reply.body)
        offset = int(reply.headers["upload-offset"])
    assert offset == len(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_digest(url: str) -> tuple[int, str]:
    """GET the finished upload; (size, sha256)."""
    reply = request("GET", url, timeout=60)
    assert reply.status in (200, 204), (reply.status, reply.body[:300])
    return len(reply.body), sha256(reply.body)


def assert_stored(url: str, data: bytes) -> None:
    assert stored_digest(url) == (len(data), sha256(data))


def requests_served(origin: str, method: str) -> int:
    """How many ``method`` requests the server has answered (its /metrics counter)."""
    reply = request("GET", origin + "/metrics")
    assert reply.status == 200, reply.status
    total = 0.0
    for line in reply.body.decode().splitlines():
        if line.startswith("tus_http_requests_total{") and f'method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def wait_served(origin: str, method: str, count: int, timeout: float = 15.0) -> None:
    """Wait until the server has answered ``count`` ``method`` requests (a dead client's
    PATCH counts once the server has stored what arrived and let go of the upload)."""
    deadline = time.monotonic() + timeout
    while (seen := requests_served(origin, method)) < count:
        assert time.monotonic() < deadline, f"{seen} {method} answered, waiting for {count}"
        time.sleep(0.02)
