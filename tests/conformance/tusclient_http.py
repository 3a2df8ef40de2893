"""Request helpers for the tus conformance suite: a thin layer over Starlette's TestClient.

Nothing here knows how the server is built inside; every helper speaks HTTP (or, for the
few things TestClient hides, raw ASGI through the client's own event-loop portal).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.testclient import TestClient

TUS_VERSION = "1.0.0"
OFFSET_OCTET = "application/offset+octet-stream"
BASE = "http://testserver"
ENDPOINT = "/files/"

EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,"
    "concatenation,concatenation-unfinished,expiration"
)
EXTENSIONS_NO_EXPIRATION = EXTENSIONS.removesuffix(",expiration")
CHECKSUM_ALGORITHMS = "sha1,sha256,md5,crc32"

UPLOAD_URL_RE = re.compile(r"^http://testserver/files/([0-9a-f]{32})$")
HTTP_DATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$"
)
ERROR_BODY_RE = re.compile(r"^(ERR_[A-Z0-9_]+): [^\r\n]*\n$")

# every actual response to a request with Origin exposes these.
EXPOSE_NAMES = (
    "Upload-Offset",
    "Location",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Expires",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Upload-Limit",
)

HeaderValue = str | bytes | None
HeaderMap = Mapping[str, HeaderValue]


# ---------------------------------------------------------------------------------------------
# small encoders


def b64(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def metadata_header(pairs: Iterable[tuple[str, str | bytes | None]]) -> str:
    """``key b64,key`` as clients build it; a None value gives a bare key."""
    parts = []
    for key, value in pairs:
        parts.append(key if value is None else f"{key} {b64(value)}")
    return ",".join(parts)


def digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    return hashlib.new(algorithm, data).digest()


def checksum_header(algorithm: str, data: bytes) -> str:
    """``<alg> <base64 of the raw digest>`` (raw digest bytes, not hex)."""
    return f"{algorithm} {b64(digest(algorithm, data))}"


def http_date_to_ts(value: str) -> float:
    parsed = email.utils.parsedate_to_datetime(value)
    return parsed.timestamp()


def csv_items(value: str | None) -> list[str]:
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def describe(response: httpx.Response) -> str:
    """One line for assertion messages: the request and what came back."""
    request = response.request
    body = "" if request.method == "HEAD" else response.text[:300]
    return (
        f"{request.method} {request.url.raw_path.decode()} -> {response.status_code} "
        f"{dict(response.headers)} {body!r}"
    )


def upload_id(url: str) -> str:
    match = UPLOAD_URL_RE.match(url)
    assert match, f"not an upload URL: {url!r}"
    return match.group(1)


def upload_path(url: str) -> str:
    return f"{ENDPOINT}{upload_id(url)}"


# ---------------------------------------------------------------------------------------------
# assertions


def assert_status(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, describe(response)


def error_code(response: httpx.Response) -> str:
    match = ERROR_BODY_RE.match(response.text)
    assert match, f"error body is not 'ERR_CODE: message\\n': {describe(response)}"
    return match.group(1)


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *codes: str) -> None:
    """Status, ``Tus-Resumable``, and (non-HEAD) an ``ERR_...`` body with one of codes."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, describe(response)
    assert response.headers.get("tus-resumable") == TUS_VERSION, describe(response)
    if response.request.method == "HEAD":
        assert response.content == b""
        return
    code = error_code(response)
    if codes:
        assert code in codes, f"expected {codes}, got {code}: {describe(response)}"


def assert_4xx_err(response: httpx.Response) -> None:
    """Bad input: a 4xx (never 5xx) and, when there is a body, an ``ERR_`` code."""
    assert 400 <= response.status_code < 500, describe(response)
    if response.request.method != "HEAD":
        error_code(response)


# ---------------------------------------------------------------------------------------------
# data-dir snapshot


Snapshot = dict[str, tuple[int, str]]


def snapshot(root: Path) -> Snapshot:
    """Relative name -> (size, sha256) of every file under ``root``."""
    listing: Snapshot = {}
    if not root.exists():
        return listing
    for path in sorted(root.rglob("*")):
        # The catalog's SQLite files change in the background (WAL checkpoints): not upload
        # bytes, and not what these snapshots are about.
        if path.is_file() and not path.name.startswith("catalog.db"):
            data = path.read_bytes()
            listing[path.relative_to(root).as_posix()] = (
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
    return listing


# ---------------------------------------------------------------------------------------------
# clock


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------------------------------------
# lifecycle hooks


class RecordingListener:
    """An upload listener (created / finished / terminated) that remembers what it saw."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    async def upload_created(self, info: Any) -> None:
        self.log.append(("created", info.id))

    async def upload_finished(self, info: Any) -> None:
        self.log.append(("finished", info.id))

    async def upload_terminated(self, info: Any) -> None:
        self.log.append(("terminated", info.id))

    def of(self, upload: str) -> list[str]:
        """Events for one upload (id or URL), in order."""
        wanted = upload.rsplit("/", 1)[-1]
        return [event for event, uid in self.log if uid == wanted]

    def count(self, event: str) -> int:
        return sum(1 for name, _ in self.log if name == event)


# ---------------------------------------------------------------------------------------------
# raw ASGI (what TestClient hides: HEAD bodies, unnormalised paths)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


async def _drive(app: Any, scope: dict[str, Any], parts: list[bytes]) -> RawResponse:
    done = anyio.Event()
    queue = list(parts) or [b""]
    status = 0
    headers: list[tuple[bytes, bytes]] = []
    body = bytearray()

    async def receive() -> dict[str, Any]:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    done.set()
    return RawResponse(status, headers, bytes(body))


# ---------------------------------------------------------------------------------------------
# the client


class TusHTTP:
    """A TestClient plus tus-shaped helpers. Every request carries ``Tus-Resumable: 1.0.0``
    unless ``version=None`` (omit) or another value is given."""

    def __init__(
        self,
        client: TestClient,
        *,
        data_dir: Path,
        settings: Any,
        clock: FakeClock | None = None,
    ) -> None:
        self.client = client
        self.data_dir = data_dir
        self.settings = settings
        self.clock = clock

    # -- plumbing ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeaderMap | None = None,
        content: bytes | Iterable[bytes] | None = None,
        version: str | None = TUS_VERSION,
        drop: Iterable[str] = (),
    ) -> httpx.Response:
        merged: dict[str, str | bytes] = {}
        if version is not None:
            merged["Tus-Resumable"] = version
        for name, value in (headers or {}).items():
            for existing in [k for k in merged if k.lower() == name.lower()]:
                del merged[existing]
            if value is not None:
                merged[name] = value
        request = self.client.build_request(method, url, headers=merged, content=content)
        for name in drop:
            if name in request.headers:
                del request.headers[name]
        return self.client.send(request)

    def raw(
        self,
        method: str,
        path: str,
        *,
        headers: HeaderMap | None = None,
        body: bytes = b"",
        raw_path: bytes | None = None,
        version: str | None = TUS_VERSION,
    ) -> RawResponse:
        """Call the ASGI app directly with an exact ``path`` (no client-side normalisation)."""
        header_list: list[tuple[bytes, bytes]] = [(b"host", b"testserver")]
        if version is not None:
            header_list.append((b"tus-resumable", version.encode()))
        for name, value in (headers or {}).items():
            if value is None:
                continue
            encoded = value if isinstance(value, bytes) else value.encode("latin-1")
            header_list.append((name.lower().encode("latin-1"), encoded))
        if body:
            header_list.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
            "root_path": "",
            "query_string": b"",
            "headers": header_list,
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
            "extensions": {},
            "state": dict(self.client.app_state),
        }
        portal = self.client.portal
        assert portal is not None, "raw() needs the TestClient context to be entered"
        return portal.call(_drive, self.client.app, scope, [body] if body else [])

    def snapshot(self) -> Snapshot:
        return snapshot(self.data_dir)

    # -- tus verbs ---------------------------------------------------------------------------

    def options(self, url: str = ENDPOINT, **kw: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kw)

    def create(
        self,
        length: int | str | None = None,
        *,
        defer: bool = False,
        metadata: str | None = None,
        concat: str | None = None,
        body: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
        headers: HeaderMap | None = None,
        url: str = ENDPOINT,
        **kw: Any,
    ) -> httpx.Response:
        merged: dict[str, HeaderValue] = {}
        if length is not None:
            merged["Upload-Length"] = str(length)
        if defer:
            merged["Upload-Defer-Length"] = "1"
        if metadata is not None:
            merged["Upload-Metadata"] = metadata
        if concat is not None:
            merged["Upload-Concat"] = concat
        if body is not None:
            merged["Content-Type"] = content_type if content_type is not None else OFFSET_OCTET
        elif content_type is not None:
            merged["Content-Type"] = content_type
        merged.update(headers or {})
        return self.request("POST", url, headers=merged, content=body, **kw)

    def new(self, length: int | None = None, **kw: Any) -> str:
        """Create an upload that must succeed; returns its absolute URL."""
        response = self.create(length, **kw)
        assert response.status_code == 201, describe(response)
        location = response.headers["location"]
        upload_id(location)
        return location

    def head(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("HEAD", url, **kw)

    def patch(
        self,
        url: str,
        offset: int | str | None,
        body: bytes | Iterable[bytes] = b"",
        *,
        content_type: str | None = OFFSET_OCTET,
        headers: HeaderMap | None = None,
        method: str = "PATCH",
        **kw: Any,
    ) -> httpx.Response:
        merged: dict[str, HeaderValue] = {}
        if content_type is not None:
            merged["Content-Type"] = content_type
        if offset is not None:
            merged["Upload-Offset"] = str(offset)
        merged.update(headers or {})
        return self.request(method, url, headers=merged, content=body, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    # -- composites --------------------------------------------------------------------------

    def offset(self, url: str) -> int:
        response = self.head(url)
        assert response.status_code == 200, describe(response)
        return int(response.headers["upload-offset"])

    def append(self, url: str, offset: int, body: bytes, **kw: Any) -> httpx.Response:
        """A PATCH that must succeed and advance the offset by ``len(body)``."""
        response = self.patch(url, offset, body, **kw)
        assert response.status_code == 204, describe(response)
        assert response.headers["upload-offset"] == str(offset + len(body)), describe(response)
        return response

    def upload(self, data: bytes, *, chunk: int | None = None, **create_kw: Any) -> str:
        """Create and fill an upload of ``data``; returns its URL."""
        url = self.new(len(data), **create_kw)
        step = chunk or max(len(data), 1)
        for start in range(0, len(data), step):
            self.append(url, start, data[start : start + step])
        return url

    def content(self, url: str) -> bytes:
        response = self.get(url)
        assert response.status_code == 200, describe(response)
        return response.content


MakeClient = Callable[..., TusHTTP]
