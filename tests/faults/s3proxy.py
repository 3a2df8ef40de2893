"""A small fault-injecting HTTP proxy for S3 (asyncio), in front of moto's server.

The server under test gets the proxy's URL as ``TUS_S3_ENDPOINT_URL``; the test tells the
proxy to answer the next N requests of one S3 operation (``UploadPart``, ``PutObject``,
``CompleteMultipartUpload``..., told apart by method, query and headers) with a 500/503 and
S3's XML error body, or to hold them for a while before passing them on. Everything else is
relayed to moto unchanged. It runs on its own event loop in a thread, so a synchronous test
can steer it between requests.

Each request is relayed on a fresh upstream connection and read whole before it is answered
(S3 bodies here are a few MiB at most), which keeps the relay simple: no pipelining, and the
framing towards the client is always ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.netutil import free_port

MESSAGES = {
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "SlowDown": (503, "Please reduce your request rate."),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    # Refusals: S3 will not take the request as sent.
    "AccessDenied": (403, "Access Denied"),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "RequestHeaderSectionTooLarge": (400, "Your request header section exceeds the maximum."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}


def operation(method: str, target: str, headers: dict[str, str]) -> str:
    """The S3 API operation a path-style request is (as far as the fault tests need)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.split("/") if s]
    on_object = len(segments) > 1
    copy = "x-amz-copy-source" in headers
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if on_object:
            return "CopyObject" if copy else "PutObject"
        return "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if on_object else "DeleteBucket"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "uploads" in query:
            return "ListMultipartUploads"
        return "GetObject" if on_object else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if on_object else "HeadBucket"
    return method


def error_body(code: str, key: str) -> bytes:
    message = MESSAGES[code][1]
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{key}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


@dataclass
class Fault:
    """Answer ``times`` requests of ``op`` (None: every one, until cleared) whose key ends
    with ``suffix`` with ``code`` (an S3 error), or delay them by ``delay`` seconds; the
    first ``after`` matching requests pass untouched."""

    op: str
    code: str | None = None
    delay: float = 0.0
    times: int | None = None
    suffix: str = ""
    after: int = 0
    seen: int = 0
    hits: int = 0

    def take(self, op: str, key: str) -> bool:
        """Whether this fault applies to the request (counting it if so)."""
        if op != self.op or not key.endswith(self.suffix):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.hits >= self.times):
            return False
        self.hits += 1
        return True


class S3FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        # (operation, status) of every request answered, relayed or injected.
        self.seen: Counter[tuple[str, int]] = Counter()
        # (operation, header lines) of every request, as the client sent them.
        self.heads: list[tuple[str, list[str]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- steering (from the test's thread) ---------------------------------------------

    def inject(
        self,
        op: str,
        *,
        code: str | None = None,
        delay: float = 0.0,
        times: int | None = None,
        suffix: str = "",
        after: int = 0,
    ) -> Fault:
        fault = Fault(op, code, delay, times, suffix, after)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self, fault: Fault | None = None) -> None:
        """End one fault (or all of them)."""
        with self._lock:
            if fault is None:
                self._faults.clear()
            else:
                self._faults.remove(fault)

    def count(self, op: str, status: int | None = None) -> int:
        with self._lock:
            return sum(n for (o, s), n in self.seen.items() if o == op and status in (None, s))

    def _match(self, op: str, key: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.take(op, key):
                    return fault
        return None

    def _note(self, op: str, status: int) -> None:
        with self._lock:
            self.seen[(op, status)] += 1

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Closing a kept-alive connection ends its reader loop; cancelling it instead
            # would make asyncio log the cancelled task as an error.
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._clients, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- relaying ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._clients.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request of a kept-alive connection; False once the client is gone."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = _parse_headers(lines[1:])
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await _read_body(reader, headers)
        op = operation(method, target, headers)
        with self._lock:
            self.heads.append((op, [line for line in lines[1:] if line]))
        key = urlsplit(target).path
        fault = self._match(op, key)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.code is not None:
            status = MESSAGES[fault.code][0]
            payload = b"" if method == "HEAD" else error_body(fault.code, key)
            response_headers = [("Content-Type", "application/xml")]
            response_headers.append(("Content-Length", str(len(payload))))
            reason = http.HTTPStatus(status).phrase
            _write_response(writer, status, reason, response_headers, payload)
        else:
            status, reason, response_headers, payload = await self._relay(
                method, target, lines[1:], body
            )
            _write_response(writer, status, reason, response_headers, payload)
        self._note(op, status)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"

    async def _relay(
        self, method: str, target: str, header_lines: list[str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            kept = [
                line
                for line in header_lines
                if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP
            ]
            kept += [f"Content-Length: {len(body)}", "Connection: close"]
            request = f"{method} {target} HTTP/1.1\r\n" + "\r\n".join(kept) + "\r\n\r\n"
            up_writer.write(request.encode("latin-1") + body)
            await up_writer.drain()
            head = await up_reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, status_text, reason = [*lines[0].split(" ", 2), ""][:3]
            status = int(status_text)
            headers = _parse_headers(lines[1:])
            pairs = [
                (name.strip(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            ]
            if method == "HEAD" or status in (204, 304) or status < 200:
                # No body; a HEAD's Content-Length describes the object and is kept as sent.
                kept_pairs = [(n, v) for n, v in pairs if n.lower() not in _HOP_BY_HOP]
                if "content-length" in headers:
                    kept_pairs.append(("Content-Length", headers["content-length"]))
                return status, reason, kept_pairs, b""
            if "chunked" in headers.get("transfer-encoding", "").lower():
                payload = await _read_chunked(up_reader)
            elif "content-length" in headers:
                payload = await up_reader.readexactly(int(headers["content-length"]))
            else:
                payload = await up_reader.read()
            kept_pairs = [(n, v) for n, v in pairs if n.lower() not in _HOP_BY_HOP]
            kept_pairs.append(("Content-Length", str(len(payload))))
            return status, reason, kept_pairs, payload
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    return await reader.readexactly(int(headers.get("content-length", "0") or 0))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _write_response(
    writer: asyncio.StreamWriter,
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    payload: bytes,
) -> None:
    head = f"HTTP/1.1 {status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    writer.write(head.encode("latin-1") + b"\r\n" + payload)
