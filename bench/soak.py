"""``make soak``: tens of thousands of requests, malformed ones included, against one real
server; memory must come back near where it started.

Owns the soak: the server (``bench.soak_server``: ``tusserver serve`` plus a probe of its
in-memory tables), the request mix, the counts per status, the RSS readings and the verdict.

1. Start the server (embedded default: local disk, local state, SQLite catalog; ``--redis``
   and ``--s3`` use the tests' redis-server and moto helpers), warm it up, let it settle,
   read its RSS and its tables: the baseline.
2. ``--rounds`` rounds of ``--requests`` requests each (at most ``--seconds`` per round),
   ``--concurrency`` workers on keep-alive connections, loopback only. The mix: tus uploads
   start to finish (create, PATCH, HEAD, download, DELETE), creation-with-upload with good
   and bad checksums, the REST API (init with Idempotency-Key, status, complete, catalog,
   delivery URLs, direct uploads), and malformed requests of every kind: bad headers, bad
   metadata, wrong offsets, unknown ids, bad JSON, oversized bodies, garbage on the wire,
   connections cut mid-body; with ``--auth`` a JWT per request for one of many users, and
   bad tokens; with ``--trust-proxy`` a different ``X-Forwarded-For`` address per request.
3. After each round, once the server is idle: RSS, peak RSS, and the tables again.

The verdict (exit 1 when any fails): no 5xx answer; no connection error on a well-formed
request; the tables that only hold in-flight work (locks, catalog work in progress, the
directory fsync table) are empty; bounded tables are within their bounds; asyncio tasks and
open files are back near the baseline; and RSS after the last round is at most
``--max-growth-mib`` (default 64 MiB) above the baseline. That margin is generous on
purpose: CPython rarely hands freed memory back to the OS, and the bounded tables (rate-limit
counters, idempotency records, download quota) legitimately keep what the load put in them
for their window. A leak of a kilobyte per request would still show: 100,000 requests make
100 MiB. The rounds tell growth from leak: a leak keeps growing round after round.

Usage: ``python -m bench.soak [--requests 30000] [--rounds 2] [--concurrency 16]
[--auth] [--trust-proxy] [--redis] [--s3] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Connection
from bench.procs import Proc
from tests.netutil import free_port

KiB = 1024
MiB = 1024 * KiB
JWT_SECRET = "soak-secret-" + "s" * 40
# Tables that only hold work in flight: empty once the server is idle.
IDLE_EMPTY = (
    "locker.held",
    "locker.holders",
    "locker.queues",
    "locker.local",
    "service.held_locks",
    "catalog.processing",
    "catalog.insert_queue",
    "catalog.queued",
    "fsutil.dir_syncs",
)
# Tables bounded by design, and their bounds (see each owner's comment).
BOUNDS = {
    "service.progress_at": 10_000,
    "digests.running": 4096,
    "digests.heads": 256,
    "idempotency.entries": 10_000,
    "idempotency.bytes": 32 * MiB,
    "delivery.quota_subjects": 100_000,
    "ratelimit.counters": 100_000,
}
_REQUESTS_LINE = re.compile(
    r'tus_http_requests_total\{method="(?P<method>[A-Z]+)",status="(?P<status>\d+)"\} '
    r"(?P<count>\S+)"
)
TASK_SLACK = 4
FD_SLACK = 32


# -- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    proc: Proc
    port: int
    probe_file: Path
    breakdown: dict[str, int] = field(default_factory=dict)

    def rss(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in bytes, from /proc."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                values[name] = int(rest.split()[0]) * KiB
        self.breakdown = {k: v for k, v in values.items() if k.startswith("Rss")}
        return values["VmRSS"], values["VmHWM"]

    def probe(self, timeout: float = 180.0) -> dict[str, Any]:
        """The server's tables, threads, tasks and open files (see bench.soak_server)."""
        previous = self._seq()
        self.proc.popen.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._seq() > previous:
                data: dict[str, Any] = json.loads(self.probe_file.read_text())
                if "error" in data:
                    raise RuntimeError(f"the probe failed: {data['error']}")
                return data
            time.sleep(0.05)
        raise RuntimeError(f"the server did not answer the probe:\n{self.proc.tail()}")

    def _seq(self) -> int:
        try:
            return int(json.loads(self.probe_file.read_text())["seq"])
        except (OSError, ValueError, KeyError):
            return 0

    def server_errors(self) -> dict[str, int]:
        """5xx answers the server counted (``/metrics``), by method and status: those sent
        on connections the client had already cut included, which no client sees."""
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as answer:
            text = answer.read().decode()
        found: dict[str, int] = {}
        for line in text.splitlines():
            match = _REQUESTS_LINE.match(line)
            if match and match["status"].startswith("5"):
                key = f"{match['method']} {match['status']}"
                found[key] = found.get(key, 0) + int(float(match["count"]))
        return found

    def settle(self) -> None:
        """Until the server is idle: background work the load caused counts."""
        self.proc.meter.settle(quiet=0.5, idle_cpu=0.02, timeout=60.0)


def server_env(workdir: Path, options: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env.update(
        TMPDIR=str(workdir),
        SOAK_PROBE_FILE=str(workdir / "probe.json"),
        TUS_LOG_LEVEL="warning",
        # High enough never to refuse the soak, low enough that every request is counted:
        # the counters are one of the tables under test.
        TUS_RATE_LIMIT_PER_USER="10000000",
        TUS_RATE_LIMIT_PER_IP="10000000",
        TUS_RATE_LIMIT_CREATIONS_PER_USER="10000000",
        TUS_DELIVERY_DAILY_QUOTA_PER_IP="10000000",
        TUS_MAX_SIZE=str(64 * MiB),
    )
    env.update(item.split("=", 1) for item in options.env)
    if options.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "1"
    if options.auth:
        env["TUS_JWT_SECRET"] = JWT_SECRET
    if options.trust_proxy:
        env["TUS_TRUST_PROXY"] = "true"
    if options.redis:
        from tests.services_redis import REDIS

        env.update(TUS_STATE="redis", TUS_REDIS_URL=REDIS.ensure_started())
        env["TUS_REDIS_PREFIX"] = f"soak{os.getpid()}:"
    if options.s3:
        env.update(s3_env())
    return env


def s3_env() -> dict[str, str]:
    import urllib.request

    from tests.services_s3 import MOTO

    url = MOTO.ensure_started()
    bucket = f"soak-{os.getpid()}"
    with urllib.request.urlopen(urllib.request.Request(f"{url}/{bucket}", method="PUT")):
        pass
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TUS_STORAGE": "s3",
        "TUS_S3_ENDPOINT_URL": url,
        "TUS_S3_BUCKET": bucket,
    }


def start_server(workdir: Path, options: argparse.Namespace) -> Server:
    port = free_port()
    data_dir = workdir / "data"
    data_dir.mkdir()
    argv = [sys.executable, "-m", "bench.soak_server", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    proc = Proc("tusserver (soak)", argv, server_env(workdir, options), workdir / "server.log")
    proc.wait_http(port)
    return Server(proc, port, workdir / "probe.json")


# -- the client -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the load saw: answers per status, 5xx samples, client-side errors."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    requests: int = 0

    def note(self, method: str, path: str, status: int, body: bytes) -> None:
        self.requests += 1
        self.statuses[str(status)] += 1
        if status >= 500 and len(self.server_errors) < 50:
            self.server_errors.append(f"{method} {path[:80]} -> {status} {body[:300]!r}")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Worker:
    """One keep-alive connection and the identity its requests carry."""

    def __init__(self, port: int, tally: Tally, options: argparse.Namespace, seed: int) -> None:
        self.port = port
        self.tally = tally
        self.options = options
        self.rng = random.Random(seed)
        self.conn = Connection("127.0.0.1", port)
        # (owner, upload id) of finished uploads, for the catalog and delivery reads.
        self.finished: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)
        self.user = "user-0"

    def new_user(self) -> None:
        """A user for the next operation: one per operation, as uploads are their owner's."""
        self.user = f"user-{self.rng.randrange(self.options.users)}"

    def identity(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.options.auth:
            headers.append(("Authorization", f"Bearer {token_for(self.user)}"))
        if self.options.trust_proxy:
            ip = f"10.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
            headers.append(("X-Forwarded-For", ip))
        return headers

    async def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        identity: bool = True,
    ) -> Reply | None:
        """A well-formed request; None (and a client error noted) if the connection failed."""
        all_headers = [*(self.identity() if identity else ()), *headers]
        try:
            status, reply, content = await asyncio.wait_for(
                self.conn.request(method, path, all_headers, [memoryview(body)], len(body)),
                timeout=60,
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self.conn.close()
            self.tally.requests += 1
            self.tally.statuses["client-error"] += 1
            if len(self.tally.client_errors) < 50:
                self.tally.client_errors.append(f"{method} {path[:80]}: {type(exc).__name__}")
            return None
        self.tally.note(method, path, status, content)
        return Reply(status, reply, content)

    async def raw(self, data: bytes, *, cut: bool = False) -> None:
        """Bytes on a connection of their own; ``cut`` closes it without reading a reply."""
        self.tally.requests += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.tally.statuses["client-error"] += 1
            return
        try:
            writer.write(data)
            await writer.drain()
            if cut:
                self.tally.statuses["cut"] += 1
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status = int(head.split(b" ", 2)[1])
            self.tally.note("RAW", data[:40].decode("latin-1"), status, head)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            self.tally.statuses["closed-by-server"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


_TOKENS: dict[str, str] = {}


def token_for(user: str) -> str:
    """One token per user, minted once (the soak measures the server, not PyJWT)."""
    token = _TOKENS.get(user)
    if token is None:
        from tusserver.security.auth import mint_token

        token = _TOKENS[user] = mint_token(JWT_SECRET, user, ttl=86400)
    return token


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(name: str) -> str:
    return f"filename {b64(name)},filetype {b64('application/octet-stream')}"


TUS = ("Tus-Resumable", "1.0.0")
OCTETS = ("Content-Type", "application/offset+octet-stream")
JSON = ("Content-Type", "application/json")


def path_of(location: str) -> str:
    if "://" in location:
        rest = location.split("://", 1)[1]
        return rest[rest.find("/") :]
    return location


# -- the request mix ----------------------------------------------------------------------------


async def tus_upload(w: Worker) -> None:
    """A tus upload start to finish: create, two PATCHes, HEAD, download, sometimes DELETE."""
    size = w.rng.randint(1, 32 * KiB)
    data = w.rng.randbytes(size)
    headers = [TUS, ("Upload-Length", str(size)), ("Upload-Metadata", metadata("soak.bin"))]
    created = await w.send("POST", "/files/", headers)
    if created is None or created.status != 201:
        return
    path = path_of(created.headers.get("location", ""))
    half = size // 2
    for start, end in ((0, half), (half, size)):
        if end > start:
            offset = ("Upload-Offset", str(start))
            await w.send("PATCH", path, [TUS, OCTETS, offset], data[start:end])
    await w.send("HEAD", path, [TUS])
    ranged = [("Range", "bytes=0-9")] if w.rng.random() < 0.3 else []
    await w.send("GET", path, ranged)
    if w.rng.random() < 0.3:
        await w.send("DELETE", path, [TUS])
    else:
        w.finished.append((w.user, path.rsplit("/", 1)[1]))


async def tus_with_upload(w: Worker) -> None:
    """Creation-with-upload with an Upload-Checksum: right (201) or wrong (460)."""
    data = w.rng.randbytes(w.rng.randint(1, 8 * KiB))
    digest = hashlib.sha1(data).digest()
    if w.rng.random() < 0.3:
        digest = bytes(20)
    checksum = ("Upload-Checksum", "sha1 " + base64.b64encode(digest).decode())
    headers = [TUS, OCTETS, ("Upload-Length", str(len(data))), checksum]
    await w.send("POST", "/files/", headers, data)


def _bad_tus_requests(w: Worker, upload: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    unknown = "/files/" + os.urandom(16).hex()
    return [
        ("POST", "/files/", [("Upload-Length", "5")]),  # no Tus-Resumable: 412
        ("POST", "/files/", [TUS, ("Upload-Length", "abc")]),
        ("POST", "/files/", [TUS, ("Upload-Length", "-1")]),
        ("POST", "/files/", [TUS, ("Upload-Length", "99999999999999999999999")]),
        ("POST", "/files/", [TUS, ("Upload-Length", "5"), ("Upload-Metadata", "a !!!notb64")]),
        ("POST", "/files/", [TUS, ("Upload-Length", "5"), ("Upload-Metadata", "k YQ==,k YQ==")]),
        ("POST", "/files/", [TUS, ("Upload-Length", "5"), ("Upload-Concat", "final;nonsense")]),
        ("POST", "/files/", [TUS, ("Upload-Defer-Length", "2")]),
        ("POST", "/files/", [TUS, ("Upload-Length", str(10**12))]),  # over TUS_MAX_SIZE
        ("PATCH", upload, [TUS, OCTETS, ("Upload-Offset", "7")]),  # wrong offset: 409
        ("PATCH", upload, [TUS, ("Content-Type", "text/plain"), ("Upload-Offset", "0")]),
        ("PATCH", upload, [TUS, OCTETS, ("Upload-Offset", "-3")]),
        ("PATCH", upload, [TUS, OCTETS, ("Upload-Offset", "0"), ("Upload-Checksum", "rot13 x")]),
        ("PATCH", unknown, [TUS, OCTETS, ("Upload-Offset", "0")]),
        ("HEAD", unknown, [TUS]),
        ("HEAD", "/files/" + "z" * 200, [TUS]),
        ("GET", unknown, []),
        ("GET", upload, []),  # not finished yet
        ("DELETE", unknown, [TUS]),
        ("HEAD", upload, [("Tus-Resumable", "0.2.2")]),
        ("OPTIONS", "/files/", [TUS]),
        ("PUT", "/files/", [TUS]),
    ]


async def tus_malformed(w: Worker) -> None:
    """One unfinished upload, then bad requests of every kind against it and unknown ids."""
    created = await w.send("POST", "/files/", [TUS, ("Upload-Length", "5")])
    upload = (
        path_of(created.headers.get("location", ""))
        if created and created.status == 201
        else "/files/x"
    )
    for method, path, headers in w.rng.sample(_bad_tus_requests(w, upload), 4):
        await w.send(method, path, headers, b"hello" if method == "PATCH" else b"")
    if w.rng.random() < 0.5:
        await w.send("DELETE", upload, [TUS])


async def api_flow(w: Worker) -> None:
    """init (sometimes with an Idempotency-Key, sometimes repeated), status, the bytes over
    tus, complete, the catalog record, a download URL and the download through it."""
    size = w.rng.randint(1, 16 * KiB)
    body = json.dumps({"filename": "api.bin", "file_size": size, "content_type": "text/plain"})
    headers = [JSON]
    if w.rng.random() < 0.5:
        headers.append(("Idempotency-Key", f"soak-{w.rng.randrange(10**9)}"))
    init = await w.send("POST", "/api/v1/uploads/init", headers, body.encode())
    data = init.json() if init is not None and init.status in (200, 201) else None
    if not isinstance(data, dict) or "upload_id" not in data:
        return
    if len(headers) > 1 and w.rng.random() < 0.3:
        await w.send("POST", "/api/v1/uploads/init", headers, body.encode())  # replayed
    upload_id = data["upload_id"]
    await w.send("GET", f"/api/v1/uploads/{upload_id}/status")
    patch = [TUS, OCTETS, ("Upload-Offset", "0")]
    await w.send("PATCH", f"/files/{upload_id}", patch, w.rng.randbytes(size))
    complete = json.dumps({"upload_id": upload_id}).encode()
    await w.send("POST", "/api/v1/uploads/complete", [JSON], complete)
    await w.send("GET", f"/api/v1/files/{upload_id}")
    await download_via_url(w, upload_id)


async def download_via_url(w: Worker, upload_id: str) -> None:
    request = json.dumps({"file_id": upload_id, "ttl_seconds": 60}).encode()
    minted = await w.send("POST", "/api/v1/delivery/download-url", [JSON], request)
    url = minted.json() if minted is not None and minted.status == 200 else None
    if isinstance(url, dict) and isinstance(url.get("url"), str):
        await w.send("GET", path_of(url["url"]), identity=False)


async def api_reads(w: Worker) -> None:
    """Catalog lists and records, and delivery URLs for uploads this worker finished."""
    page = w.rng.choice(["page=1&page_size=10", "page=2&page_size=5&search=soak", "page=1"])
    await w.send("GET", f"/api/v1/files?{page}")
    await w.send("GET", "/api/v1/files/recent?limit=5")
    if w.finished:
        w.user, file_id = w.rng.choice(list(w.finished))  # as its owner
        await w.send("GET", f"/api/v1/files/{file_id}")
        await download_via_url(w, file_id)


def _bad_api_requests(w: Worker) -> list[tuple[str, str, bytes]]:
    unknown = os.urandom(16).hex()
    return [
        ("POST", "/api/v1/uploads/init", b"{not json"),
        ("POST", "/api/v1/uploads/init", b'{"filename": 5, "file_size": "x"}'),
        (
            "POST",
            "/api/v1/uploads/init",
            b'{"filename": "a", "file_size": -1, "content_type": "x"}',
        ),
        ("POST", "/api/v1/uploads/init", b"[]"),
        ("POST", "/api/v1/uploads/init", b'"\\ud800"'),
        ("POST", "/api/v1/uploads/complete", json.dumps({"upload_id": unknown}).encode()),
        ("POST", "/api/v1/uploads/complete", b"{}"),
        ("GET", f"/api/v1/uploads/{unknown}/status", b""),
        ("DELETE", f"/api/v1/uploads/{unknown}", b""),
        ("GET", "/api/v1/files?page_size=100000", b""),
        ("GET", "/api/v1/files?page=-1&sort_by=nope", b""),
        ("GET", f"/api/v1/files/{unknown}", b""),
        ("PATCH", f"/api/v1/files/{unknown}", b'{"filename": ""}'),
        ("POST", "/api/v1/delivery/download-url", b'{"file_id": "x", "storage_key": "y"}'),
        ("POST", "/api/v1/delivery/download-url", json.dumps({"file_id": unknown}).encode()),
        ("POST", "/api/v1/delivery/redeem", b'{"token": "nonsense"}'),
        ("GET", "/d/not-a-token", b""),
        ("POST", "/api/v1/uploads/presigned", b'{"filename": "../x", "content_type": "a"}'),
        ("PUT", "/api/v1/uploads/direct-parts/forged.token", b"abc"),
        ("GET", "/api/v1/nothing-here", b""),
        ("POST", "/api/v1/files", b"{}"),
    ]


async def api_malformed(w: Worker) -> None:
    for method, path, body in w.rng.sample(_bad_api_requests(w), 4):
        await w.send(method, path, [JSON] if body else [], body)


async def direct_flow(w: Worker) -> None:
    """A presigned (one PUT) direct upload: create, PUT, complete; or create and abort."""
    size = w.rng.randint(1, 4 * KiB)
    request = {"filename": "direct.bin", "content_type": "text/plain", "file_size": size}
    created = await w.send(
        "POST", "/api/v1/uploads/presigned", [JSON], json.dumps(request).encode()
    )
    data = created.json() if created is not None and created.status in (200, 201) else None
    if not isinstance(data, dict) or "upload_id" not in data:
        return
    one = f"/api/v1/uploads/presigned/{data['upload_id']}"
    url = str(data.get("upload_url", ""))
    if w.rng.random() < 0.2 or f":{w.port}/" not in url:  # S3's URLs point at moto
        await w.send("POST", f"{one}/abort")
        return
    put_headers = list(dict(data.get("headers") or {}).items())
    await w.send("PUT", path_of(url), put_headers, w.rng.randbytes(size), identity=False)
    await w.send("GET", one)
    await w.send("POST", f"{one}/complete")


async def wire_garbage(w: Worker) -> None:
    """What a broken client or a scanner sends: bad syntax, cut bodies, oversized bodies."""
    host = f"Host: 127.0.0.1:{w.port}\r\n"
    auth = "".join(f"{k}: {v}\r\n" for k, v in w.identity())
    choice = w.rng.randrange(6)
    if choice == 0:
        await w.raw(b"GARBAGE \x00\x01 nonsense\r\n\r\n")
    elif choice == 1:
        await w.raw(f"GET /files/ HTTP/1.1\r\n{host}Bad Header Line\r\n\r\n".encode())
    elif choice == 2:  # a PATCH cut mid-body: the server keeps what arrived
        created = await w.send("POST", "/files/", [TUS, ("Upload-Length", "100000")])
        if created is not None and created.status == 201:
            path = path_of(created.headers.get("location", ""))
            head = f"PATCH {path} HTTP/1.1\r\n{host}{auth}Tus-Resumable: 1.0.0\r\n"
            head += "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            head += "Content-Length: 100000\r\n\r\n"
            await w.raw(head.encode() + os.urandom(w.rng.randint(0, 5000)), cut=True)
    elif choice == 3:  # a JSON body far over what any route reads
        big = b'{"filename": "' + b"x" * (2 * MiB) + b'"}'
        head = (
            f"POST /api/v1/uploads/init HTTP/1.1\r\n{host}{auth}Content-Type: application/json\r\n"
        )
        await w.raw(head.encode() + f"Content-Length: {len(big)}\r\n\r\n".encode() + big)
    elif choice == 4:  # headers, then the client goes away before the body
        head = (
            f"POST /api/v1/uploads/init HTTP/1.1\r\n{host}{auth}Content-Type: application/json\r\n"
        )
        await w.raw(head.encode() + b"Content-Length: 500\r\n\r\n{", cut=True)
    else:
        head = f"POST /files/ HTTP/1.1\r\n{host}{auth}Tus-Resumable: 1.0.0\r\nUpload-Length: 5\r\n"
        await w.raw(head.encode() + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")


async def bad_tokens(w: Worker) -> None:
    """401s: no token, garbage, a wrong signature, an expired token (``--auth`` only)."""
    from tusserver.security.auth import mint_token

    choices = [
        [],
        [("Authorization", "Bearer garbage")],
        [("Authorization", "Bearer " + mint_token("x" * 40, "mallory"))],
        [("Authorization", "Bearer " + mint_token(JWT_SECRET, "late", ttl=-3600))],
        [("Authorization", "Basic YTpi")],
    ]
    headers = w.rng.choice(choices)
    await w.send("POST", "/files/", [TUS, ("Upload-Length", "5"), *headers], identity=False)
    await w.send("GET", "/api/v1/files", headers, identity=False)


Op = Callable[[Worker], Awaitable[None]]
MIX: list[tuple[Op, int]] = [
    (tus_upload, 4),
    (tus_with_upload, 2),
    (tus_malformed, 4),
    (api_flow, 2),
    (api_reads, 2),
    (api_malformed, 3),
    (direct_flow, 1),
    (wire_garbage, 2),
]


# -- rounds, readings, verdict ------------------------------------------------------------------


async def run_load(port: int, options: argparse.Namespace, requests: int, seed: int) -> Tally:
    """``requests`` requests (at most ``options.seconds``), ``options.concurrency`` at once."""
    tally = Tally()
    mix = list(MIX) + ([(bad_tokens, 2)] if options.auth else [])
    ops, weights = zip(*mix, strict=True)
    deadline = time.monotonic() + options.seconds

    async def work(worker: Worker) -> None:
        try:
            while tally.requests < requests and time.monotonic() < deadline:
                worker.new_user()
                await worker.rng.choices(ops, weights)[0](worker)
        finally:
            await worker.conn.close()

    workers = [Worker(port, tally, options, seed * 1000 + n) for n in range(options.concurrency)]
    await asyncio.gather(*(work(worker) for worker in workers))
    return tally


@dataclass
class Reading:
    label: str
    rss: int
    peak: int
    probe: dict[str, Any]
    server_errors: dict[str, int]
    tally: Tally | None = None
    seconds: float = 0.0


def read(server: Server, label: str, tally: Tally | None = None, seconds: float = 0.0) -> Reading:
    server.settle()
    probe = server.probe()
    rss, peak = server.rss()
    probe["rss_kinds"] = {k: v // KiB for k, v in server.breakdown.items()}
    for line in probe.get("grown", []):
        print(f"  {label} grew: {line}", flush=True)
    return Reading(label, rss, peak, probe, server.server_errors(), tally, seconds)


def run(options: argparse.Namespace, workdir: Path) -> list[Reading]:
    """Start the server, warm it up, then the rounds: a reading after each."""
    server = start_server(workdir, options)
    try:
        asyncio.run(run_load(server.port, options, options.warmup, seed=0))
        readings = [read(server, "baseline")]
        server.proc.meter.reset_peak()
        for n in range(1, options.rounds + 1):
            started = time.perf_counter()
            tally = asyncio.run(run_load(server.port, options, options.requests, seed=n))
            readings.append(read(server, f"round {n}", tally, time.perf_counter() - started))
        return readings
    finally:
        server.proc.stop()
        log_problems(server.proc.log)


def log_problems(log: Path) -> None:
    """Tracebacks in the server's log are 500s in waiting: how many, by the exception that
    ended each, and the first of each kind."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    kinds: collections.Counter[str] = collections.Counter()
    first: dict[str, str] = {}
    for line in lines:
        if "Traceback" not in line:
            continue
        trace = line[line.index("Traceback") :].replace("\\n", "\n").rstrip('"}')
        kind = trace.strip().rsplit("\n", 1)[-1][:200]
        kinds[kind] += 1
        first.setdefault(kind, trace[-2500:])
    for kind, count in kinds.most_common():
        print(f"soak: {count} tracebacks in the server log ending in {kind}:", flush=True)
        print(first[kind], flush=True)


def verdict(readings: Sequence[Reading], max_growth: int) -> list[str]:
    """Every failed check, in words (empty: the soak passed)."""
    base, last = readings[0], readings[-1]
    failures: list[str] = []
    for reading in readings[1:]:
        assert reading.tally is not None
        failures += [f"{reading.label}: 5xx: {line}" for line in reading.tally.server_errors]
        failures += [f"{reading.label}: {line}" for line in reading.tally.client_errors]
    for key, count in last.server_errors.items():
        if count > base.server_errors.get(key, 0):
            failures.append(
                f"the server answered {key} {count - base.server_errors.get(key, 0)} times"
            )
    sizes = last.probe["sizes"]
    failures += [f"{name} holds {sizes[name]} when idle" for name in IDLE_EMPTY if sizes.get(name)]
    for name, bound in BOUNDS.items():
        if (sizes.get(name) or 0) > bound:
            failures.append(f"{name} is {sizes[name]}, above its bound {bound}")
    if last.probe["tasks"] > base.probe["tasks"] + TASK_SLACK:
        failures.append(f"asyncio tasks: {base.probe['tasks']} -> {last.probe['tasks']}")
    if last.probe["fds"] > base.probe["fds"] + FD_SLACK:
        failures.append(f"open files: {base.probe['fds']} -> {last.probe['fds']}")
    if last.rss - base.rss > max_growth:
        growth = (last.rss - base.rss) / MiB
        failures.append(f"RSS grew {growth:.1f} MiB, more than {max_growth / MiB:.0f} MiB")
    return failures


def report(readings: Sequence[Reading]) -> str:
    lines = ["reading      RSS MiB  peak MiB  requests  req/s  tasks  fds  gc objects"]
    for r in readings:
        count = r.tally.requests if r.tally else 0
        rate = f"{count / r.seconds:6.0f}" if r.seconds else "     -"
        lines.append(
            f"{r.label:<11} {r.rss / MiB:8.1f} {r.peak / MiB:9.1f} {count:9d} {rate} "
            f"{r.probe['tasks']:6d} {r.probe['fds']:4d} {r.probe['gc_objects']:11d}"
        )
    statuses: collections.Counter[str] = collections.Counter()
    for r in readings:
        if r.tally:
            statuses.update(r.tally.statuses)
    lines.append("statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    names = sorted({name for r in readings for name in r.probe["sizes"]})
    lines.append("tables:   " + "  ".join(f"{r.label}" for r in readings))
    for name in names:
        values = "  ".join(str(r.probe["sizes"].get(name)) for r in readings)
        lines.append(f"  {name}: {values}")
    return "\n".join(lines)


def as_json(readings: Sequence[Reading], failures: Sequence[str]) -> dict[str, Any]:
    return {
        "readings": [
            {
                "label": r.label,
                "rss": r.rss,
                "peak_rss": r.peak,
                "seconds": r.seconds,
                "requests": r.tally.requests if r.tally else 0,
                "statuses": dict(r.tally.statuses) if r.tally else {},
                "server_5xx": r.server_errors,
                "probe": r.probe,
            }
            for r in readings
        ],
        "failures": list(failures),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=30_000, help="requests per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=600.0, help="at most this long per round")
    p.add_argument("--warmup", type=int, default=2000, help="requests before the baseline")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--auth", action="store_true", help="JWT auth on; many users, bad tokens")
    p.add_argument("--users", type=int, default=5000, help="distinct users with --auth")
    p.add_argument("--trust-proxy", action="store_true", help="a new X-Forwarded-For each time")
    p.add_argument("--redis", action="store_true", help="state and locks in redis-server")
    p.add_argument("--s3", action="store_true", help="bytes in moto's S3 server")
    p.add_argument("--max-growth-mib", type=float, default=64.0)
    p.add_argument(
        "--env", action="append", default=[], metavar="TUS_NAME=value", help="a server setting"
    )
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the server's allocations and print the lines that grew (slow)",
    )
    p.add_argument("--json", type=Path, help="write the readings here too")
    p.add_argument(
        "--data-root",
        type=Path,
        help="where the server's data dir goes (default: the temp dir; /dev/shm spares the "
        "disk: the soak measures memory, not fsync)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tussoak-", dir=options.data_root) as tmp:
        readings = run(options, Path(tmp))
    failures = verdict(readings, int(options.max_growth_mib * MiB))
    print(report(readings), flush=True)
    if options.json:
        options.json.write_text(json.dumps(as_json(readings, failures), indent=2))
    for failure in failures:
        print(f"FAIL {failure}", flush=True)
    print("soak: " + ("FAILED" if failures else "passed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
