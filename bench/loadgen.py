"""The benchmark's tus client: raw HTTP/1.1 over asyncio on loopback, cheap enough to measure.

Owns ``Scenario`` (N uploads of a size, cut into PATCHes of a chunk size, with a concurrency)
and ``run_scenario``: one keep-alive connection per worker, POST (with the body when
creation-with-upload), PATCHes with ``Upload-Offset``, every status and offset checked, the
latency of each request recorded, and the client's own CPU time so a saturated client is
seen. Payload bytes are generated once (``os.urandom``) and sent as memoryview slices; no
request reads a file or copies its body. ``head_offset`` and ``delete_all`` serve the checks
and the cleanup after a measured run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
WRITE_SLICE = 1 * MiB  # bytes handed to the transport per write (bounds client buffering)
PAYLOAD_SIZE = 16 * MiB  # random bytes generated once; bodies are slices of it, repeated
_METADATA = "filename YmVuY2guYmlu,filetype YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt"  # bench.bin


class TusError(RuntimeError):
    """The server answered something a tus client would not accept."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    uploads: int
    size: int
    chunk: int  # bytes per request; >= size means one request carries the whole upload
    concurrency: int
    creation_with_upload: bool = False

    @property
    def total_bytes(self) -> int:
        return self.uploads * self.size


@dataclass
class RunResult:
    """One measured run of a scenario against one server."""

    wall: float
    total_bytes: int
    uploads: int
    data_latencies: list[float]  # seconds, requests that carried upload bytes
    create_latencies: list[float]  # seconds, POSTs without a body
    client_cpu: float
    locations: list[str] = field(repr=False)

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.wall / 1e6

    @property
    def uploads_per_s(self) -> float:
        return self.uploads / self.wall

    @property
    def client_load(self) -> float:
        """Client CPU seconds per wall second (1.0: one core busy all the time)."""
        return self.client_cpu / self.wall


class Payload:
    """Random bytes made once; ``slices(n)`` yields n bytes of it as memoryviews."""

    def __init__(self, size: int = PAYLOAD_SIZE) -> None:
        self.view = memoryview(os.urandom(size))

    def slices(self, length: int, start: int = 0) -> list[memoryview]:
        out, pos, size = [], start % len(self.view), len(self.view)
        while length > 0:
            take = min(length, WRITE_SLICE, size - pos)
            out.append(self.view[pos : pos + take])
            length -= take
            pos = (pos + take) % size
        return out


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it run one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.host_header = f"{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=256 * KiB)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: Sequence[memoryview] = (),
        length: int = 0,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request (``length`` body bytes in ``body`` slices); status, headers, body."""
        if self._writer is None:
            await self.open()
        reader, writer = self._reader, self._writer
        assert reader is not None
        assert writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if length or method in ("POST", "PATCH"):
            lines.append(f"Content-Length: {length}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        for piece in body:
            writer.write(piece)
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        reply: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            reply[name.strip().lower()] = value.strip()
        content = b""
        if method != "HEAD" and status not in (204, 304):
            if "content-length" in reply:
                content = await reader.readexactly(int(reply["content-length"]))
            elif reply.get("transfer-encoding", "").lower() == "chunked":
                content = await self._read_chunked(reader)
        if reply.get("connection", "").lower() == "close":
            await self.close()
        return status, reply, content

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


def _path_of(location: str) -> str:
    """The path of an absolute or relative Location."""
    if "://" in location:
        rest = location.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return location


def _expect(ok: bool, what: str, status: int, body: bytes) -> None:
    if not ok:
        raise TusError(f"{what}: HTTP {status} {body[:200]!r}")


async def upload_one(
    conn: Connection,
    endpoint: str,
    scenario: Scenario,
    payload: Payload,
    seed: int,
    data_latencies: list[float],
    create_latencies: list[float],
) -> str:
    """One upload, start to finish; returns its path. Raises TusError on any surprise."""
    size, chunk = scenario.size, min(scenario.chunk, scenario.size)
    headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", str(size)),
        ("Upload-Metadata", _METADATA),
    ]
    offset = 0
    started = time.perf_counter()
    if scenario.creation_with_upload:
        headers.append(("Content-Type", "application/offset+octet-stream"))
        first = chunk
        status, reply, body = await conn.request(
            "POST", endpoint, headers, payload.slices(first, seed), first
        )
        data_latencies.append(time.perf_counter() - started)
        _expect(status == 201, "POST", status, body)
        _expect(reply.get("upload-offset") == str(first), "POST Upload-Offset", status, body)
        offset = first
    else:
        status, reply, body = await conn.request("POST", endpoint, headers)
        create_latencies.append(time.perf_counter() - started)
        _expect(status == 201, "POST", status, body)
    location = reply.get("location")
    _expect(bool(location), "POST Location", status, body)
    path = _path_of(location or "")
    patch_headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Content-Type", "application/offset+octet-stream"),
    ]
    while offset < size:
        length = min(chunk, size - offset)
        started = time.perf_counter()
        status, reply, body = await conn.request(
            "PATCH",
            path,
            [*patch_headers, ("Upload-Offset", str(offset))],
            payload.slices(length, seed + offset),
            length,
        )
        data_latencies.append(time.perf_counter() - started)
        _expect(status == 204, "PATCH", status, body)
        offset += length
        _expect(reply.get("upload-offset") == str(offset), "PATCH Upload-Offset", status, body)
    return path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_scenario(
    port: int, scenario: Scenario, payload: Payload, endpoint: str = "/files/"
) -> RunResult:
    """All of ``scenario``'s uploads, ``concurrency`` at a time, each worker on its own
    keep-alive connection (opened before the clock starts)."""
    workers = min(scenario.concurrency, scenario.uploads)
    conns = [Connection("127.0.0.1", port) for _ in range(workers)]
    await asyncio.gather(*(conn.open() for conn in conns))
    data: list[float] = []
    create: list[float] = []
    locations: list[str] = []
    next_index = iter(range(scenario.uploads))

    async def worker(conn: Connection) -> None:
        for index in next_index:
            path = await upload_one(conn, endpoint, scenario, payload, index * 4099, data, create)
            locations.append(path)

    cpu_before = _cpu()
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
        wall = time.perf_counter() - started
        client_cpu = _cpu() - cpu_before
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))
    return RunResult(
        wall=wall,
        total_bytes=scenario.total_bytes,
        uploads=scenario.uploads,
        data_latencies=data,
        create_latencies=create,
        client_cpu=client_cpu,
        locations=locations,
    )


async def head_offset(port: int, path: str) -> tuple[int | None, int | None]:
    """(Upload-Offset, Upload-Length) a HEAD reports."""
    conn = Connection("127.0.0.1", port)
    try:
        status, reply, body = await conn.request("HEAD", path, [("Tus-Resumable", "1.0.0")])
    finally:
        await conn.close()
    _expect(status == 200, "HEAD", status, body)

    def number(name: str) -> int | None:
        value = reply.get(name)
        return int(value) if value is not None else None

    return number("upload-offset"), number("upload-length")


async def delete_all(port: int, paths: Sequence[str], concurrency: int = 16) -> int:
    """tus DELETE (termination) of every path; the number that did not answer 204."""
    todo = iter(paths)
    failed = 0

    async def worker() -> None:
        nonlocal failed
        conn = Connection("127.0.0.1", port)
        try:
            for path in todo:
                status, _, _ = await conn.request("DELETE", path, [("Tus-Resumable", "1.0.0")])
                failed += status != 204
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(1, len(paths))))))
    return failed
