"""A generated sweep of malformed tus requests against the real app (in-process, lifespan on).

Hypothesis draws a method (POST, PATCH, HEAD, DELETE, OPTIONS, GET), a target (the creation
URL, known uploads, a missing one, garbage) and values for every header tus reads
(``Upload-Length``, ``Upload-Offset``, ``Upload-Metadata``, ``Upload-Concat``,
``Upload-Checksum``, ``Upload-Defer-Length``, ``Tus-Resumable``, ``Content-Type``,
``Content-Length``, ``X-HTTP-Method-Override``): valid ones, garbage, huge and negative
numbers, Unicode digits, control characters, very long values. Headers travel as raw bytes,
as an ASGI server hands them over.

Two rules: never a 5xx; and the stored bytes of the known uploads never change, except by
an accepted append: exactly the request's body (or, with 413, the part of it that fitted),
at the offset the upload was at, or a termination answered 204.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.types import Message

from tusserver.app import create_app
from tusserver.settings import Settings
from tusserver.state.local import read_record

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

MAX_SIZE = 1024 * 1024
OFFSET = "<current offset>"  # replaced by the target's offset when the request is sent
CHECKSUM = "<sha1 of the body>"  # replaced by a correct Upload-Checksum for the body
# Answers of the sweep by status, printed at the end (-s).
STATUSES: Counter[int] = Counter()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(
    app: Starlette, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Reply:
    """One request, headers as raw bytes (what a server passes on), the body in one piece."""
    sent: list[Message] = []
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # a client still connected, sending nothing more
        raise AssertionError("unreachable")

    async def respond(message: Message) -> None:
        sent.append(message)

    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, respond)
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return Reply(start["status"], names, data)


def encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    # latin-1 where it fits (as a server decodes), else UTF-8 bytes: either way raw octets.
    out = []
    for name, value in headers.items():
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        out.append((name.lower().encode(), raw))
    return out


@dataclass
class Known:
    """An upload whose bytes the test keeps track of."""

    id: str
    content: bytearray = field(default_factory=bytearray)


@dataclass
class Harness:
    app: Starlette
    runner: asyncio.Runner
    data_dir: Path
    uploads: dict[str, Known] = field(default_factory=dict)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        return self.runner.run(send(self.app, method, path, encode(headers), body))

    def create(self, role: str) -> None:
        """(Re)create the known upload ``role``: 'partial' (64 of 256 bytes), 'deferred'
        (length not yet declared, 10 bytes) or 'finished' (32 bytes)."""
        headers = {"Tus-Resumable": "1.0.0"}
        if role == "deferred":
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = "256" if role == "partial" else "32"
        created = self.request("POST", "/files/", headers)
        assert created.status == 201, created
        upload_id = created.headers["location"].rsplit("/", 1)[1]
        first = (
            bytes(range(64))
            if role == "partial"
            else bytes(range(32 if role == "finished" else 10))
        )
        patched = self.request(
            "PATCH",
            f"/files/{upload_id}",
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            first,
        )
        assert patched.status == 204, patched
        self.uploads[role] = Known(upload_id, bytearray(first))

    def state(self, known: Known) -> tuple[int, int | None, bytes] | None:
        """(offset, length, stored bytes up to the offset), or None if the upload is gone."""
        info = read_record(self.data_dir / f"{known.id}.json", known.id)
        if info is None:
            return None
        data = (self.data_dir / f"{known.id}.bin").read_bytes()[: info.offset]
        return info.offset, info.length, data


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    data_dir = Path(tmp_path_factory.mktemp("malformed"))
    app = create_app(
        Settings(
            data_dir=data_dir,
            max_size=MAX_SIZE,
            media_probe=False,
            rate_limit_per_user=0,
            rate_limit_per_ip=0,
            rate_limit_creations_per_user=0,
        )
    )
    with asyncio.Runner() as runner:
        stack = AsyncExitStack()
        runner.run(stack.enter_async_context(app.router.lifespan_context(app)))
        try:
            made = Harness(app, runner, data_dir)
            for role in ("partial", "deferred", "finished"):
                made.create(role)
            assert made.state(made.uploads["partial"]) is not None, "the state layout changed"
            yield made
        finally:
            runner.run(stack.aclose())
    counts = dict(sorted(STATUSES.items()))
    print(f"\nmalformed tus sweep: {sum(STATUSES.values())} requests, by status {counts}")


# -- strategies ---------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=40)  # any character but surrogates
controls = st.text(st.characters(max_codepoint=0x1F) | st.just("\x7f"), min_size=1, max_size=6)
numbers = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.integers(2**63 - 3, 2**300).map(str),
    st.sampled_from(
        [
            *("", " ", "0", "00", "1", "-0", "+5", "1.5", "1e3", "0x10", " 7 ", "7 7", "NaN"),
            *("\u0663", "\uff15", "\u00b2", "\u00b9\u00b3", "9" * 4400, "1\x00"),
        ]
    ),
)
very_long = st.sampled_from(["a" * 9000, "filename " + "QUFB" * 3000, "final;" + "/files/x " * 900])
garbage = st.one_of(numbers, text, controls, very_long)


@st.composite
def weighted(
    draw: st.DrawFn, valid: tuple[str, ...], absent: int, good: int, bad: int
) -> str | None:
    kind = draw(st.sampled_from(["absent"] * absent + ["good"] * good + ["bad"] * bad))
    if kind == "absent":
        return None
    return draw(st.sampled_from(valid)) if kind == "good" else draw(garbage)


def header(*valid: str) -> st.SearchStrategy[str | None]:
    """Absent (half the time), one of the valid values (30%) or garbage (20%): valid enough
    that requests get past the first check and reach the next one."""
    return weighted(valid, 5, 3, 2)


HEADERS: dict[str, st.SearchStrategy[str | None]] = {
    "Tus-Resumable": weighted(("1.0.0",), 1, 8, 1),
    "Content-Type": header(
        "application/offset+octet-stream",
        "Application/Offset+Octet-Stream; charset=binary",
        "application/offset+octet-stream;",
        "application/octet-stream",
        "text/plain",
    ),
    "Upload-Offset": header(OFFSET, "0", "64", "1"),
    "Upload-Length": header("0", "1", "64", "256", str(MAX_SIZE), str(MAX_SIZE + 1)),
    "Upload-Defer-Length": header("1", "0", "2", " 1"),
    "Upload-Metadata": header(
        "", "filename aGVsbG8udHh0", "a", "a b,c", "k !!!", "k dg==,k dg==", "k,", ",", "k  dg=="
    ),
    "Upload-Concat": header("partial", "final;", "final; ", "final;/files/abc", "final;http://x/"),
    "Upload-Checksum": header(
        CHECKSUM, "sha1", "sha1 ", "sha1 !!!", "md5 AAAA", "crc32 AAAAAA==", "nope AAAA"
    ),
    "Content-Length": st.one_of(st.none(), numbers),
    "X-HTTP-Method-Override": header("PATCH", "DELETE", "HEAD", "GET", "POST", "OPTIONS"),
}
METHODS = ["POST", "PATCH", "HEAD", "DELETE", "OPTIONS", "GET"]
TARGETS = ["collection", "partial", "deferred", "finished", "missing", "garbage"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str | None], bytes, str]:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    values = {name: draw(strategy) for name, strategy in HEADERS.items()}
    body = draw(st.one_of(st.just(b""), st.binary(max_size=300)))
    junk = draw(text)
    return method, target, values, body, junk


def resolve(
    harness: Harness, target: str, values: dict[str, str | None], body: bytes, junk: str
) -> tuple[str, dict[str, str]]:
    known = harness.uploads.get(target)
    if target == "collection":
        path = "/files/"
    elif known is not None:
        path = f"/files/{known.id}"
    elif target == "missing":
        path = "/files/" + hashlib.md5(junk.encode()).hexdigest()
    else:
        path = "/files/" + quote(junk, safe="")
    headers: dict[str, str] = {}
    for name, value in values.items():
        if value == OFFSET:
            value = str(len(known.content)) if known is not None else "0"
        elif value == CHECKSUM:
            value = "sha1 " + base64.b64encode(hashlib.sha1(body).digest()).decode()
        if value is not None:
            headers[name] = value
    return path, headers


@given(requests())
@settings(
    max_examples=2000,
    derandomize=True,
    database=None,
    deadline=None,
    # One app for every example, on purpose: its uploads carry over from request to request.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_malformed_tus_requests(
    harness: Harness, request_: tuple[str, str, dict[str, str | None], bytes, str]
) -> None:
    method, target, values, body, junk = request_
    path, headers = resolve(harness, target, values, body, junk)
    before = {role: harness.state(known) for role, known in harness.uploads.items()}
    reply = harness.request(method, path, headers, body)
    STATUSES[reply.status] += 1
    assert reply.status < 500, (method, path, headers, reply)

    for role, known in list(harness.uploads.items()):
        old = before[role]
        assert old is not None
        new = harness.state(known)
        if new is None:
            # Terminated: only by a request answered 204 (a DELETE, maybe by override).
            assert reply.status == 204, (role, method, headers, reply)
            harness.create(role)
            continue
        (old_offset, _, old_bytes), (offset, length, data) = old, new
        assert data[:old_offset] == old_bytes, (role, method, headers, reply)
        if offset != old_offset:
            # An accepted append of this request's body, at the offset the upload was at.
            assert reply.status in (204, 413), (role, method, headers, reply)
            assert offset > old_offset
            assert data[old_offset:] == body[: offset - old_offset], (role, method, headers)
            known.content[:] = data
        if length is not None and offset >= length and role != "finished":
            harness.create(role)  # complete: start a fresh one to keep appending to


def test_unicode_digits_are_not_numbers(harness: Harness) -> None:
    """Regression: ``str.isdigit()`` accepts "²", which ``int()`` refuses; these reached
    ``int()`` and answered 500."""
    created = harness.request(
        "POST",
        "/api/v1/uploads/multipart",
        {"Content-Type": "application/json"},
        b'{"filename": "a.bin", "file_size": 1000, "content_type": "video/mp4"}',
    )
    assert created.status == 201, created
    upload_id = json.loads(created.body)["upload_id"]
    part = harness.request("GET", f"/api/v1/uploads/multipart/{upload_id}/parts/%C2%B2", {})
    assert part.status == 422, part
    init = harness.request(
        "POST",
        "/api/v1/uploads/init",
        {"Content-Type": "application/json", "Content-Length": "\u00b2"},
        b'{"filename": "a.txt", "file_size": 3, "content_type": "text/plain"}',
    )
    assert init.status == 201, init
    direct = harness.request(
        "PUT",
        "/api/v1/uploads/direct-parts/not-a-token",
        {"Content-Type": "text/plain", "Content-Length": "\u00b3"},
        b"abc",
    )
    assert direct.status < 500, direct


# -- headers sent twice, and Upload-Concat lists --------------------------------------------------


def raw_request(
    harness: Harness, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> Reply:
    """Headers as a list, so one name can appear twice."""
    encoded = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers]
    return harness.runner.run(send(harness.app, method, path, encoded, body))


TUS = ("Tus-Resumable", "1.0.0")
OCTETS = ("Content-Type", "application/offset+octet-stream")


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("Upload-Length", "5", "6"),
        ("Upload-Metadata", "a YQ==", "a Yg=="),
        ("Upload-Concat", "partial", "final;/files/" + "0" * 32),
        ("Upload-Defer-Length", "1", "2"),
        ("Idempotency-Key", "k1", "k2"),
    ],
)
def test_a_creation_header_sent_twice_with_different_values_is_400(
    harness: Harness, name: str, first: str, second: str
) -> None:
    headers = [TUS, ("Upload-Length", "5")] if name != "Upload-Length" else [TUS]
    if name == "Upload-Defer-Length":
        headers = [TUS]
    reply = raw_request(harness, "POST", "/files/", [*headers, (name, first), (name, second)])
    assert reply.status == 400, reply
    assert reply.body.startswith(b"ERR_DUPLICATE_HEADER"), reply.body
    assert reply.headers["tus-resumable"] == "1.0.0"


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("Upload-Offset", OFFSET, "0"),
        ("Upload-Length", "256", "300"),
        ("Upload-Checksum", "sha1 " + CHECKSUM, "sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
        ("Content-Type", OCTETS[1], "text/plain"),
    ],
)
def test_a_patch_header_sent_twice_with_different_values_is_400_and_appends_nothing(
    harness: Harness, name: str, first: str, second: str
) -> None:
    known = harness.uploads["partial"]
    before = harness.state(known)
    assert before is not None
    offset, _, _ = before
    body = b"more bytes"
    sha1 = base64.b64encode(hashlib.sha1(body).digest()).decode()

    def filled(value: str) -> str:
        return value.replace(OFFSET, str(offset)).replace(CHECKSUM, sha1)

    headers = [TUS, OCTETS, ("Upload-Offset", str(offset))]
    headers = [h for h in headers if h[0] != name]
    headers += [(name, filled(first)), (name, filled(second))]
    reply = raw_request(harness, "PATCH", f"/files/{known.id}", headers, body)
    assert reply.status == 400, reply
    assert reply.body.startswith(b"ERR_DUPLICATE_HEADER"), reply.body
    assert harness.state(known) == before


def test_a_header_repeated_with_the_same_value_is_accepted(harness: Harness) -> None:
    reply = raw_request(
        harness, "POST", "/files/", [TUS, ("Upload-Length", "5"), ("Upload-Length", " 5")]
    )
    assert reply.status == 201, reply


def _concat_partial(harness: Harness) -> str:
    reply = raw_request(
        harness, "POST", "/files/", [TUS, ("Upload-Length", "4"), ("Upload-Concat", "partial")]
    )
    assert reply.status == 201, reply
    return reply.headers["location"].rsplit("/", 1)[1]


def test_a_final_naming_a_partial_twice_is_400(harness: Harness) -> None:
    partial = _concat_partial(harness)
    listed = " ".join([f"/files/{partial}"] * 1000)
    reply = raw_request(harness, "POST", "/files/", [TUS, ("Upload-Concat", f"final;{listed}")])
    assert reply.status == 400, reply
    assert reply.body.startswith(b"ERR_INVALID_CONCAT"), reply.body
    twice = f"final;/files/{partial} /files/{partial}"
    reply = raw_request(harness, "POST", "/files/", [TUS, ("Upload-Concat", twice)])
    assert reply.status == 400, reply


def test_a_final_naming_more_partials_than_allowed_is_400(harness: Harness) -> None:
    allowed = Settings().max_concat_parts
    ids = [_concat_partial(harness) for _ in range(allowed + 1)]
    too_many = "final;" + " ".join(f"/files/{i}" for i in ids)
    reply = raw_request(harness, "POST", "/files/", [TUS, ("Upload-Concat", too_many)])
    assert reply.status == 400, reply
    assert reply.body.startswith(b"ERR_INVALID_CONCAT"), reply.body
    enough = "final;" + " ".join(f"/files/{i}" for i in ids[:allowed])
    reply = raw_request(harness, "POST", "/files/", [TUS, ("Upload-Concat", enough)])
    assert reply.status == 201, reply
