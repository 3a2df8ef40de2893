"""Core protocol: versioning, OPTIONS, HEAD, PATCH, method override, routing, offsets.

Also the core-protocol client behaviours (tus-js-client, tuspy, TUSKit, tus-java-client) that
can be expressed as request sequences. See docs/protocol.md, "Versioning and Tus-Resumable",
"HEAD without Tus-Resumable", "Discovery", "Offset retrieval", "Appending", "Content types",
"PATCH on a completed upload", "Method override", "Routing and 405" and "Downloads".
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from tusserver import errors

from .tusclient_http import (
    CHECKSUM_ALGORITHMS,
    ENDPOINT,
    EXTENSIONS,
    OFFSET_OCTET,
    TUS_VERSION,
    UPLOAD_URL_RE,
    MakeClient,
    RecordingListener,
    TusHTTP,
    assert_error,
    assert_status,
    checksum_header,
    csv_items,
    describe,
    error_code,
    upload_path,
)

UNKNOWN = f"{ENDPOINT}{'0' * 32}"

# =============================================================================================
# 1.1 Versioning


Request = Callable[[TusHTTP, str], httpx.Response]

# (id, request, expected status): one row per response shape, successes and errors alike.
T001_ROWS: list[tuple[str, Request, int]] = [
    ("options-endpoint", lambda t, u: t.options(ENDPOINT), 200),
    ("options-upload", lambda t, u: t.options(u), 200),
    ("options-no-version", lambda t, u: t.options(ENDPOINT, version=None), 200),
    ("post-201", lambda t, u: t.create(5), 201),
    ("post-400-no-length", lambda t, u: t.create(), 400),
    ("post-412", lambda t, u: t.create(5, version=None), 412),
    ("head-200", lambda t, u: t.head(u), 200),
    ("head-404", lambda t, u: t.head(UNKNOWN), 404),
    ("head-412", lambda t, u: t.head(u, version="0.2.2"), 412),
    ("patch-204", lambda t, u: t.patch(u, 0, b"abc"), 204),
    ("patch-409", lambda t, u: t.patch(u, 3, b"abc"), 409),
    ("patch-415", lambda t, u: t.patch(u, 0, b"abc", content_type=None), 415),
    ("patch-404", lambda t, u: t.patch(UNKNOWN, 0, b"abc"), 404),
    ("patch-412", lambda t, u: t.patch(u, 0, b"abc", version="0.2.2"), 412),
    ("delete-204", lambda t, u: t.delete(u), 204),
    ("delete-404", lambda t, u: t.delete(UNKNOWN), 404),
    ("delete-412", lambda t, u: t.delete(u, version="2.0.0"), 412),
    ("post-upload-405", lambda t, u: t.request("POST", u), 405),
    ("patch-endpoint-405", lambda t, u: t.patch(ENDPOINT, 0, b""), 405),
]


@pytest.mark.parametrize(
    ("make_request", "status"),
    [pytest.param(r, s, id=i) for i, r, s in T001_ROWS],
)
def test_every_response_carries_tus_resumable(
    tus: TusHTTP, make_request: Request, status: int
) -> None:
    """Success or error, every tus response has ``Tus-Resumable: 1.0.0``
    (and ``X-Content-Type-Options: nosniff``)."""
    url = tus.new(10)
    response = make_request(tus, url)
    assert_status(response, status)
    assert response.headers.get("tus-resumable") == TUS_VERSION, describe(response)
    assert response.headers.get("x-content-type-options") == "nosniff", describe(response)


def test_post_without_version_412_creates_nothing(tus: TusHTTP) -> None:
    """No upload, no Location, storage unchanged."""
    before = tus.snapshot()
    response = tus.create(5, version=None)
    assert_error(response, 412, errors.UnsupportedVersion.code)
    assert response.headers.get("tus-version") == TUS_VERSION
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_patch_wrong_version_412_offset_unchanged(tus: TusHTTP) -> None:
    """412 + Tus-Version; the 5 bytes are not appended."""
    url = tus.new(10)
    before = tus.snapshot()
    response = tus.patch(url, 0, b"hello", version="0.2.2")
    assert_error(response, 412, errors.UnsupportedVersion.code)
    assert response.headers.get("tus-version") == TUS_VERSION
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


def test_delete_wrong_version_412_upload_survives(tus: TusHTTP) -> None:
    """DELETE with a wrong or missing version -> 412; the upload stays."""
    url = tus.new(10)
    for version in ("2.0.0", None):
        response = tus.delete(url, version=version)
        assert_error(response, 412, errors.UnsupportedVersion.code)
        assert response.headers.get("tus-version") == TUS_VERSION
    assert tus.head(url).status_code == 200


def test_412_does_not_declare_length(tus: TusHTTP) -> None:
    """A 412 PATCH carrying Upload-Length on a deferred upload declares nothing."""
    url = tus.new(defer=True)
    before = tus.snapshot()
    response = tus.patch(url, 0, b"hello", headers={"Upload-Length": "5"}, version="0.2.2")
    assert_error(response, 412, errors.UnsupportedVersion.code)
    head = tus.head(url)
    assert head.headers.get("upload-offset") == "0"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers
    assert tus.snapshot() == before


def test_412_fires_no_hooks(hooked: TusHTTP, events: RecordingListener) -> None:
    """A 412 fires no hooks (no created, no finished)."""
    url = hooked.new(5)
    seen = list(events.log)
    assert_status(hooked.create(0, version=None), 412)
    assert_status(hooked.patch(url, 0, b"hello", version="0.2.2"), 412)
    assert_status(hooked.delete(url, version="2.0.0"), 412)
    assert events.log == seen


@pytest.mark.parametrize(
    ("version", "status"),
    [
        pytest.param(None, 200, id="absent-served"),
        pytest.param("1.0.0", 200, id="1.0.0"),
        pytest.param("0.2.2", 412, id="0.2.2"),
        pytest.param("1.0", 412, id="1.0"),
    ],
)
def test_head_version_check(tus: TusHTTP, version: str | None, status: int) -> None:
    """HEAD without Tus-Resumable is served; a wrong value -> 412."""
    url = tus.new(10)
    response = tus.head(url, version=version)
    assert_status(response, status)
    if status == 412:
        assert response.headers.get("tus-version") == TUS_VERSION
    else:
        assert response.headers.get("upload-offset") == "0"


def test_header_names_case_insensitive(tus: TusHTTP) -> None:
    """``TUS-Resumable`` (TUSKit), all-lowercase names (tuspy) accepted.

    ASGI lowercases request header names before the app sees them, so this pins the
    end-to-end behaviour rather than a parser detail.
    """
    response = tus.request(
        "POST",
        ENDPOINT,
        headers={"TUS-Resumable": "1.0.0", "upload-length": "5", "upload-metadata": ""},
        version=None,
    )
    assert_status(response, 201)
    url = response.headers["location"]
    response = tus.request(
        "PATCH",
        url,
        headers={
            "tus-resumable": "1.0.0",
            "upload-offset": "0",
            "content-type": OFFSET_OCTET,
        },
        content=b"hello",
        version=None,
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "5"


@pytest.mark.parametrize(
    ("version", "status"),
    [
        pytest.param("1.0.0", 201, id="exact"),
        pytest.param(" 1.0.0 ", 201, id="trimmed"),
        pytest.param("1.0", 412, id="1.0"),
        pytest.param("1.0.0,0.2.2", 412, id="list"),
        pytest.param("1.0.1", 412, id="1.0.1"),
        pytest.param("", 412, id="empty"),
    ],
)
def test_version_compared_exactly(tus: TusHTTP, version: str, status: int) -> None:
    """Exact compare to 1.0.0 after trimming whitespace."""
    response = tus.create(5, version=version)
    assert_status(response, status)


def test_tus_version_is_1_0_0(tus: TusHTTP) -> None:
    """``Tus-Version: 1.0.0`` on discovery and on 412."""
    assert tus.options().headers.get("tus-version") == "1.0.0"
    assert tus.create(5, version="9.9.9").headers.get("tus-version") == "1.0.0"


# =============================================================================================
# 1.2 OPTIONS


@pytest.mark.parametrize(
    "where", ["endpoint", "endpoint-no-slash", "upload-existing", "upload-unknown"]
)
@pytest.mark.parametrize("version", [None, "1.0.0", "9.9.9"], ids=["none", "1.0.0", "9.9.9"])
def test_options_discovery(tus: TusHTTP, where: str, version: str | None) -> None:
    """200 with the exact discovery headers on E and any U."""
    url = {
        "endpoint": ENDPOINT,
        "endpoint-no-slash": ENDPOINT.rstrip("/"),
        "upload-existing": tus.new(5),
        "upload-unknown": UNKNOWN,
    }[where]
    response = tus.options(url, version=version)
    assert_status(response, 200)
    headers = response.headers
    assert headers.get("tus-version") == TUS_VERSION
    assert headers.get("tus-resumable") == TUS_VERSION
    assert headers.get("tus-extension") == EXTENSIONS
    assert headers.get("tus-checksum-algorithm") == CHECKSUM_ALGORITHMS
    assert "checksum-trailer" not in csv_items(headers.get("tus-extension"))
    assert "tus-max-size" not in headers, "no limit configured -> header omitted"


def test_tus_max_size_advertised(make_client: MakeClient) -> None:
    """``Tus-Max-Size`` equals the configured limit."""
    tus = make_client(max_size=1000)
    assert tus.options().headers.get("tus-max-size") == "1000"


def test_comma_lists_have_no_spaces(tus: TusHTTP) -> None:
    """TUSKit splits on ',' without trimming."""
    headers = tus.options().headers
    for name in ("tus-version", "tus-extension", "tus-checksum-algorithm"):
        value = headers.get(name)
        assert value, name
        assert " " not in value, f"{name}: {value!r}"


# =============================================================================================
# 1.3 HEAD


def test_head_fresh_upload(tus: TusHTTP) -> None:
    """200, offset 0, length 100, no-store."""
    url = tus.new(100)
    response = tus.head(url)
    assert_status(response, 200)
    assert response.headers.get("upload-offset") == "0"
    assert response.headers.get("upload-length") == "100"
    assert "no-store" in response.headers.get("cache-control", "")
    assert "upload-defer-length" not in response.headers


def test_head_sends_no_body_raw(tus: TusHTTP) -> None:
    """No body bytes on the wire (checked below TestClient, which drops
    HEAD bodies); a Content-Length, if sent, is consistent with what GET would return."""
    url = tus.upload(b"0123456789")
    raw = tus.raw("HEAD", upload_path(url))
    assert raw.status == 200
    assert raw.body == b""
    assert raw.header("upload-offset") == "10"
    content_length = raw.header("content-length")
    assert content_length in (None, "10")

    unfinished = tus.new(100)
    tus.append(unfinished, 0, b"abc")
    raw = tus.raw("HEAD", upload_path(unfinished))
    assert raw.status == 200
    assert raw.body == b""
    assert raw.header("content-length") in (None, "100", "3")


def test_head_tracks_offset(tus: TusHTTP) -> None:
    """70 of 100, then complete (offset still sent; the HEAD is
    answered by the tus handler, not an implicit GET route)."""
    url = tus.new(100)
    tus.append(url, 0, b"x" * 70)
    head = tus.head(url)
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == ("70", "100")
    tus.append(url, 70, b"y" * 30)
    head = tus.head(url)
    assert_status(head, 200)
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == ("100", "100")
    assert "no-store" in head.headers.get("cache-control", "")


def test_head_deferred_length(tus: TusHTTP) -> None:
    """Deferred upload -> offset N, ``Upload-Defer-Length: 1``, no Upload-Length."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"1234567")
    head = tus.head(url)
    assert head.headers.get("upload-offset") == "7"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers


def test_head_unknown_404(tus: TusHTTP) -> None:
    """Exactly 404, no Upload-Offset, no body, no-store."""
    response = tus.head(UNKNOWN)
    assert_error(response, 404)
    assert "upload-offset" not in response.headers
    assert "no-store" in response.headers.get("cache-control", "")
    raw = tus.raw("HEAD", UNKNOWN)
    assert raw.status == 404
    assert raw.body == b""


# =============================================================================================
# 1.4 PATCH


def test_patch_appends(tus: TusHTTP) -> None:
    """204, ``Upload-Offset: 5``, no body."""
    url = tus.new(11)
    response = tus.patch(url, 0, b"hello")
    assert_status(response, 204)
    assert response.headers.get("upload-offset") == "5"
    assert response.content == b""
    assert response.headers.get("tus-resumable") == TUS_VERSION


def test_offset_counts_stored_bytes_not_claimed_length(tus: TusHTTP) -> None:
    """A body shorter than its Content-Length never yields an offset for
    bytes that were not stored; the offset is exactly the stored prefix."""
    url = tus.new(20)
    response = tus.patch(url, 0, b"hello", headers={"Content-Length": "10"})
    assert response.status_code < 500, describe(response)
    stored = tus.offset(url)
    assert stored in (0, 5)
    if response.status_code == 204:
        assert response.headers["upload-offset"] == str(stored) == "5"
    data = b"hello" + b"w" * 15
    tus.append(url, stored, data[stored:])
    assert tus.content(url) == data


@pytest.mark.parametrize("sent", [3, 7, 0], ids=["behind", "ahead", "zero"])
def test_offset_mismatch_409(tus: TusHTTP, sent: int) -> None:
    """Wrong offset -> 409, nothing written, HEAD still 5."""
    url = tus.new(20)
    tus.append(url, 0, b"hello")
    before = tus.snapshot()
    response = tus.patch(url, sent, b"abcde")
    assert_error(response, 409, errors.MismatchedOffset.code)
    assert tus.offset(url) == 5
    assert tus.snapshot() == before


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/octet-stream",
        "text/plain",
        "application/offset+octet-streamx",
        "application/offset",
        "multipart/form-data; boundary=x",
    ],
    ids=["missing", "octet-stream", "text", "suffix", "prefix", "multipart"],
)
def test_wrong_content_type_415(tus: TusHTTP, content_type: str | None) -> None:
    """415 ERR_INVALID_CONTENT_TYPE; upload unchanged."""
    url = tus.new(10)
    before = tus.snapshot()
    response = tus.patch(url, 0, b"hello", content_type=content_type)
    assert_error(response, 415, errors.InvalidContentType.code)
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/Offset+Octet-Stream",
        "APPLICATION/OFFSET+OCTET-STREAM",
        "application/offset+octet-stream; charset=utf-8",
        "application/offset+octet-stream;foo=bar",
    ],
)
def test_content_type_case_and_parameters_ignored(tus: TusHTTP, content_type: str) -> None:
    """Media type compared case-insensitively, parameters ignored."""
    url = tus.new(10)
    response = tus.patch(url, 0, b"hello", content_type=content_type)
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "5"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "abc",
        "-1",
        "1.5",
        " 5x",
        "+5",
        "+0",
        "",
        "0x0",
        "1e0",
        "0_0",
        "\u0660".encode(),  # ARABIC-INDIC DIGIT ZERO: Python's int() reads it as 0
        "\uff10".encode(),  # FULLWIDTH DIGIT ZERO
    ],
    ids=[
        "missing",
        "abc",
        "negative",
        "decimal",
        "trailing-junk",
        "plus5",
        "plus0",
        "empty",
        "hex",
        "exponent",
        "underscore",
        "arabic-zero",
        "fullwidth-zero",
    ],
)
def test_bad_offset_syntax_400(tus: TusHTTP, value: str | bytes | None) -> None:
    """Digits only -> otherwise 400 ERR_INVALID_OFFSET, no write.

    The upload sits at offset 0, so a lenient ``int()`` would accept ``+0``, ``0_0`` and the
    non-ASCII zeros and answer 204: this table tells syntax errors from mismatches.
    """
    url = tus.new(10)
    before = tus.snapshot()
    response = tus.patch(url, None, b"hello", headers={"Upload-Offset": value})
    assert_error(response, 400, errors.InvalidOffset.code)
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


def test_patch_unknown_404(tus: TusHTTP) -> None:
    """PATCH to an unknown id -> 404 ERR_UPLOAD_NOT_FOUND."""
    response = tus.patch(UNKNOWN, 0, b"hello")
    assert_error(response, 404, errors.NotFound.code)


def test_chunked_body_without_content_length(tus: TusHTTP) -> None:
    """``Transfer-Encoding: chunked`` without Content-Length is accepted."""
    url = tus.new(11)
    response = tus.patch(url, 0, iter([b"hel", b"lo ", b"world"]))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "11"
    assert tus.content(url) == b"hello world"


@pytest.mark.parametrize(
    ("offset", "content_type", "status"),
    [
        pytest.param(0, OFFSET_OCTET, 204, id="accepted"),
        pytest.param(4, OFFSET_OCTET, 409, id="mismatch"),
        pytest.param(0, "text/plain", 415, id="content-type"),
    ],
)
def test_expect_100_continue(tus: TusHTTP, offset: int, content_type: str, status: int) -> None:
    """``Expect: 100-continue`` (tus-java-client) -> normal handling or early 4xx."""
    url = tus.new(10)
    response = tus.patch(
        url, offset, b"hello", content_type=content_type, headers={"Expect": "100-continue"}
    )
    assert_status(response, status)
    assert tus.offset(url) == (5 if status == 204 else 0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length-0", "chunked-empty"])
def test_empty_body(tus: TusHTTP, chunked: bool) -> None:
    """An empty PATCH at the right offset -> 204, offset unchanged (both
    ``Content-Length: 0`` and an empty chunked body, as tus-js-client on Node sends)."""
    url = tus.new(10)
    tus.append(url, 0, b"abc")
    body: bytes | object = iter([]) if chunked else b""
    response = tus.patch(url, 3, body)  # type: ignore[arg-type]
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "3"
    assert tus.offset(url) == 3


@pytest.mark.parametrize(("start", "size"), [(0, 11), (5, 6), (9, 100)])
def test_size_exceeded_by_content_length_413(tus: TusHTTP, start: int, size: int) -> None:
    """Offset + Content-Length > Upload-Length -> 413 before reading; no write."""
    url = tus.new(10)
    if start:
        tus.append(url, 0, b"a" * start)
    before = tus.snapshot()
    response = tus.patch(url, start, b"z" * size)
    assert_error(response, 413, errors.SizeExceeded.code)
    assert tus.offset(url) == start
    assert tus.snapshot() == before


def test_chunked_overflow_keeps_bytes_up_to_length(tus: TusHTTP) -> None:
    """Chunked body past the length -> bytes up to the length kept, then 413."""
    url = tus.new(10)
    tus.append(url, 0, b"01234")
    response = tus.patch(url, 5, iter([b"56789", b"abcde"]))
    assert_error(response, 413, errors.SizeExceeded.code)
    head = tus.head(url)
    assert head.headers["upload-offset"] == "10"
    assert tus.content(url) == b"0123456789"


@pytest.mark.parametrize("body", [b"", b"extra"], ids=["empty", "with-body"])
def test_patch_on_completed_upload_is_noop(tus: TusHTTP, body: bytes) -> None:
    """Completed upload + matching offset -> 204, Upload-Offset = length, body
    not appended."""
    url = tus.upload(b"0123456789")
    before = tus.snapshot()
    response = tus.patch(url, 10, body)
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "10"
    assert tus.content(url) == b"0123456789"
    assert tus.snapshot() == before


REJECTED_PATCHES: list[tuple[str, dict[str, object], int]] = [
    ("409", {"offset": 3}, 409),
    ("412", {"version": "0.2.2"}, 412),
    ("415", {"content_type": "text/plain"}, 415),
    ("400-offset", {"offset": "x"}, 400),
]


@pytest.mark.parametrize(
    ("changes", "status"), [pytest.param(c, s, id=i) for i, c, s in REJECTED_PATCHES]
)
def test_rejected_patch_declares_no_length(
    tus: TusHTTP, changes: dict[str, object], status: int
) -> None:
    """A rejected PATCH appends nothing and does not declare the deferred length."""
    url = tus.new(defer=True)
    before = tus.snapshot()
    kwargs: dict[str, object] = {"offset": 0, "headers": {"Upload-Length": "5"}}
    kwargs.update(changes)
    offset = kwargs.pop("offset")
    response = tus.patch(url, offset, b"hello", **kwargs)  # type: ignore[arg-type]
    assert_status(response, status)
    head = tus.head(url)
    assert head.headers["upload-offset"] == "0"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers
    assert tus.snapshot() == before


@pytest.mark.parametrize(
    "size", [1, 1000, 65537, 5 * 1024 * 1024 + 3], ids=["1B", "1000B", "64KiB+1", "5MiB+3"]
)
def test_offset_equals_all_bytes_sent(tus: TusHTTP, size: int) -> None:
    """A 204 acknowledges every byte sent (one PATCH
    carrying the whole file, as tuspy does by default), and they are all stored."""
    data = os.urandom(size)
    url = tus.new(size)
    response = tus.patch(url, 0, data)
    assert_status(response, 204)
    assert response.headers["upload-offset"] == str(size)
    assert tus.content(url) == data


# =============================================================================================
# 1.5 X-HTTP-Method-Override


def test_override_patch(tus: TusHTTP) -> None:
    """POST U + override PATCH is a PATCH."""
    url = tus.new(5)
    response = tus.patch(
        url, 0, b"hello", method="POST", headers={"X-HTTP-Method-Override": "PATCH"}
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "5"
    assert tus.content(url) == b"hello"


def test_override_delete(tus: TusHTTP) -> None:
    """POST U + override DELETE -> 204; the upload is gone."""
    url = tus.new(5)
    response = tus.request("POST", url, headers={"X-HTTP-Method-Override": "DELETE"})
    assert_status(response, 204)
    assert tus.head(url).status_code == 404


def test_override_head(tus: TusHTTP) -> None:
    """POST U + override HEAD -> HEAD semantics."""
    url = tus.new(5)
    tus.append(url, 0, b"ab")
    response = tus.request("POST", url, headers={"X-HTTP-Method-Override": "HEAD"})
    assert_status(response, 200)
    assert response.headers.get("upload-offset") == "2"
    assert response.headers.get("upload-length") == "5"


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH"])
def test_override_ignored_on_non_post(tus: TusHTTP, method: str) -> None:
    """The override is honoured only on POST; elsewhere it is ignored."""
    url = tus.new(5)
    headers = {"X-HTTP-Method-Override": "DELETE"}
    if method == "PATCH":
        response = tus.patch(url, 0, b"hel", headers=headers)
        assert_status(response, 204)
        assert response.headers["upload-offset"] == "3"
    else:
        response = tus.request(method, url, headers=headers)
        assert response.status_code != 204, describe(response)
    assert tus.head(url).status_code == 200


# =============================================================================================
# 1.6 Routing and miscellany


@pytest.mark.parametrize("path", ["/files/", "/files"])
def test_create_on_both_paths_without_redirect(tus: TusHTTP, path: str) -> None:
    """``/files`` and ``/files/`` create directly (no 30x)."""
    response = tus.create(5, url=path)
    assert_status(response, 201)
    assert UPLOAD_URL_RE.match(response.headers["location"]), describe(response)
    assert tus.options(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "where", "allowed"),
    [
        pytest.param("POST", "upload", {"PATCH", "HEAD", "DELETE"}, id="post-upload"),
        pytest.param("PUT", "upload", {"PATCH", "HEAD", "DELETE"}, id="put-upload"),
        pytest.param("PATCH", "endpoint", {"POST"}, id="patch-endpoint"),
        pytest.param("DELETE", "endpoint", {"POST"}, id="delete-endpoint"),
    ],
)
def test_method_not_allowed_405(tus: TusHTTP, method: str, where: str, allowed: set[str]) -> None:
    """405 + ``Allow`` listing the methods of that URL."""
    url = tus.new(5) if where == "upload" else ENDPOINT
    response = tus.request(method, url, headers={"Content-Type": OFFSET_OCTET})
    assert_error(response, 405, errors.MethodNotAllowed.code)
    allow = {m.upper() for m in csv_items(response.headers.get("allow"))}
    assert allowed <= allow, describe(response)
    if where == "upload":
        assert "POST" not in allow
    else:
        assert "PATCH" not in allow


def test_error_bodies_are_text_plain_codes(tus: TusHTTP) -> None:
    """``ERR_CODE: message\\n`` as text/plain; HEAD errors carry no body."""
    url = tus.new(5)
    for response in (
        tus.create(),
        tus.patch(url, 1, b"x"),
        tus.patch(url, 0, b"x", content_type=None),
        tus.head(UNKNOWN, version="0.2.2"),
        tus.get(UNKNOWN),
    ):
        if response.request.method == "HEAD":
            assert response.content == b""
            continue
        assert response.headers.get("content-type", "").startswith("text/plain"), describe(response)
        error_code(response)
    raw = tus.raw("HEAD", upload_path(url), version="0.2.2")
    assert raw.status == 412
    assert raw.body == b""


# GET download (not tus; our stated behaviour)


def test_get_finished_upload_returns_bytes(tus: TusHTTP) -> None:
    """GET of a finished upload -> 200 with its bytes."""
    url = tus.upload(b"hello world", chunk=4)
    response = tus.get(url)
    assert_status(response, 200)
    assert response.content == b"hello world"


def test_get_unfinished_409(tus: TusHTTP) -> None:
    """GET of an unfinished upload -> 409 ERR_UPLOAD_NOT_FINISHED."""
    url = tus.new(10)
    tus.append(url, 0, b"abc")
    assert_error(tus.get(url), 409, errors.NotFinished.code)


@pytest.mark.parametrize(
    ("spec", "body", "content_range"),
    [
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=5-", b"56789", "bytes 5-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
        ("bytes=0-0", b"0", "bytes 0-0/10"),
    ],
)
def test_get_range_206(tus: TusHTTP, spec: str, body: bytes, content_range: str) -> None:
    """GET with Range -> 206 and the requested slice."""
    url = tus.upload(b"0123456789")
    response = tus.get(url, headers={"Range": spec})
    assert_status(response, 206)
    assert response.content == body
    assert response.headers.get("content-range") == content_range


def test_get_range_unsatisfiable_416(tus: TusHTTP) -> None:
    """A Range wholly past the end -> 416 (RFC 9110), not 5xx."""
    url = tus.upload(b"0123456789")
    response = tus.get(url, headers={"Range": "bytes=20-30"})
    assert_error(response, 416, errors.RangeNotSatisfiable.code)


def test_get_unknown_404(tus: TusHTTP) -> None:
    """GET of an unknown id -> 404."""
    assert_error(tus.get(UNKNOWN), 404, errors.NotFound.code)


# =============================================================================================
# 1.7 Offsets across requests


def test_head_offset_accepted_by_next_patch(tus: TusHTTP) -> None:
    """Each HEAD offset is accepted by the next PATCH; after the last
    PATCH, HEAD shows offset == length (TUSKit's retry-after-timeout path)."""
    data = os.urandom(1000)
    url = tus.new(len(data))
    for step in (1, 99, 400, 500):
        offset = tus.offset(url)
        tus.append(url, offset, data[offset : offset + step])
    head = tus.head(url)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == "1000"
    assert tus.content(url) == data


# =============================================================================================
# Client request sequences


def test_chunked_uploads_report_cumulative_offsets(tus: TusHTTP) -> None:
    """A 12 MiB file in 5, 5 and 2 MiB PATCHes; each 204 has the cumulative offset."""
    mib = 1024 * 1024
    data = os.urandom(12 * mib)
    url = tus.new(len(data))
    offset = 0
    for size in (5 * mib, 5 * mib, 2 * mib):
        response = tus.patch(url, offset, data[offset : offset + size])
        assert_status(response, 204)
        offset += size
        assert response.headers["upload-offset"] == str(offset)
    assert tus.content(url) == data


def test_retry_after_409_via_head(tus: TusHTTP) -> None:
    """A 409 is recoverable: HEAD, then PATCH from the reported offset."""
    url = tus.new(10)
    tus.append(url, 0, b"01234")
    assert tus.patch(url, 0, b"0123456789").status_code == 409
    offset = tus.offset(url)
    assert offset == 5
    tus.append(url, offset, b"56789")
    assert tus.content(url) == b"0123456789"


def test_tuspy_patch_lowercase_with_checksum(tus: TusHTTP) -> None:
    """Tuspy's PATCH (lowercase names, sha1 checksum); ``upload-offset``
    is parseable by ``int()``."""
    data = os.urandom(4096)
    url = tus.new(len(data))
    response = tus.request(
        "PATCH",
        url,
        headers={
            "upload-offset": "0",
            "Content-Type": OFFSET_OCTET,
            "upload-checksum": checksum_header("sha1", data),
        },
        content=data,
    )
    assert_status(response, 204)
    assert int(response.headers["upload-offset"]) == len(data)


def test_tuskit_head_has_length_and_offset(tus: TusHTTP) -> None:
    """HEAD is 2xx with parseable Upload-Length and Upload-Offset."""
    url = tus.new(512 * 1024)
    tus.append(url, 0, b"a" * 1024)
    head = tus.head(url, headers={"TUS-Resumable": "1.0.0"}, version=None)
    assert_status(head, 200)
    assert int(head.headers["upload-length"]) == 512 * 1024
    assert int(head.headers["upload-offset"]) == 1024


def test_java_client_chunked_expect_override(tus: TusHTTP) -> None:
    """POST + override PATCH, chunked, ``Expect: 100-continue``; the returned offset
    equals all bytes sent."""
    data = os.urandom(3 * 1024 * 1024)
    url = tus.new(len(data))
    chunks = [data[i : i + 2 * 1024 * 1024] for i in range(0, len(data), 2 * 1024 * 1024)]
    response = tus.patch(
        url,
        0,
        iter(chunks),
        method="POST",
        headers={"X-HTTP-Method-Override": "PATCH", "Expect": "100-continue"},
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == str(len(data))
    assert tus.content(url) == data


def test_head_after_termination_is_404(tus: TusHTTP) -> None:
    """A gone upload answers exactly 404 so clients re-create."""
    url = tus.new(5)
    assert tus.delete(url).status_code == 204
    response = tus.head(url)
    assert response.status_code == 404
    assert "upload-offset" not in response.headers
    assert tus.new(5) != url
