"""Creation, Upload-Metadata, creation-with-upload and creation-defer-length.

See docs/protocol.md, "Creation", "Upload-Metadata strictness", "Creation with upload",
"Deferred length" and "Upload-Length repeated or changed".
"""

from __future__ import annotations

import os
from urllib.parse import urljoin

import pytest

from tusserver import errors

from .tusclient_http import (
    ENDPOINT,
    OFFSET_OCTET,
    UPLOAD_URL_RE,
    MakeClient,
    RecordingListener,
    TusHTTP,
    assert_error,
    assert_status,
    b64,
    checksum_header,
    describe,
    metadata_header,
    upload_id,
)

# =============================================================================================
# 2.1 creation


def test_create_returns_absolute_location(tus: TusHTTP) -> None:
    """201, absolute Location, empty body, no Upload-Offset
    without a body; HEAD shows offset 0 and the length."""
    response = tus.create(100, headers={"Content-Length": "0"})
    assert_status(response, 201)
    location = response.headers["location"]
    assert UPLOAD_URL_RE.match(location), describe(response)
    assert response.content == b""
    assert "upload-offset" not in response.headers
    head = tus.head(location)
    assert_status(head, 200)
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == "100"


def test_location_survives_urljoin(tus: TusHTTP) -> None:
    """Tuspy's ``urljoin(endpoint, location)``,
    TUSKit's and Java's relative resolution all land on the upload."""
    location = tus.new(5)
    for base in ("http://testserver/files", "http://testserver/files/"):
        assert urljoin(base, location) == location


def test_length_over_max_size_413(make_client: MakeClient) -> None:
    """Upload-Length > Tus-Max-Size -> 413; nothing created."""
    tus = make_client(max_size=100)
    before = tus.snapshot()
    response = tus.create(101)
    assert_error(response, 413, errors.SizeExceeded.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before
    assert tus.create(100).status_code == 201


def test_no_length_400(tus: TusHTTP) -> None:
    """Neither Upload-Length nor Upload-Defer-Length -> 400."""
    before = tus.snapshot()
    response = tus.create()
    assert_error(response, 400, errors.LengthRequired.code)
    assert tus.snapshot() == before


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "+5", "5 5"])
def test_bad_upload_length_400(tus: TusHTTP, value: str) -> None:
    """Syntax errors -> 400 ERR_INVALID_UPLOAD_LENGTH; nothing created."""
    before = tus.snapshot()
    response = tus.create(headers={"Upload-Length": value})
    assert_error(response, 400, errors.InvalidLength.code)
    assert tus.snapshot() == before


def test_empty_upload_complete_at_creation(tus: TusHTTP) -> None:
    """Upload-Length 0 -> 201, complete (offset 0, length 0); no PATCH."""
    url = tus.new(0)
    head = tus.head(url)
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == "0"
    # A resuming client that PATCHes anyway gets the completed no-op.
    response = tus.patch(url, 0, b"")
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "0"


def test_bodyless_post_without_content_headers(tus: TusHTTP) -> None:
    """No Content-Type and no Content-Length (tus-java-client, browsers)."""
    response = tus.create(5, drop=("content-length", "content-type"))
    assert "content-length" not in response.request.headers
    assert "content-type" not in response.request.headers
    assert_status(response, 201)


def test_empty_metadata_means_none(tus: TusHTTP) -> None:
    """``Upload-Metadata:`` empty -> 201; HEAD omits Upload-Metadata."""
    url = tus.new(5, metadata="")
    assert "upload-metadata" not in tus.head(url).headers


@pytest.mark.parametrize(
    ("headers", "scheme_host"),
    [
        pytest.param({"X-Forwarded-Proto": "https"}, "https://testserver", id="x-forwarded-proto"),
        pytest.param(
            {"X-Forwarded-Host": "up.example.com", "X-Forwarded-Proto": "https"},
            "https://up.example.com",
            id="x-forwarded-host",
        ),
        pytest.param(
            {"Forwarded": "for=1.2.3.4;host=up.example.com;proto=https"},
            "https://up.example.com",
            id="forwarded",
        ),
    ],
)
def test_forwarded_headers_from_trusted_proxy(
    make_client: MakeClient, headers: dict[str, str], scheme_host: str
) -> None:
    """With trust_proxy, Location follows the forwarded scheme/host; without it the
    headers are ignored."""
    trusted = make_client(trust_proxy=True)
    location = trusted.create(5, headers=headers).headers["location"]
    assert location.startswith(f"{scheme_host}/files/"), location
    untrusted = make_client()
    location = untrusted.create(5, headers=headers).headers["location"]
    assert UPLOAD_URL_RE.match(location), location


def test_public_url_prefix(make_client: MakeClient) -> None:
    """A configured absolute base wins."""
    tus = make_client(public_url="https://up.example.com")
    location = tus.create(5).headers["location"]
    assert location.startswith("https://up.example.com/files/"), location
    assert len(location.rsplit("/", 1)[1]) == 32


def test_ids_unguessable_and_unique(tus: TusHTTP) -> None:
    """32 lowercase hex characters, never reused."""
    ids = {upload_id(tus.new(1)) for _ in range(50)}
    assert len(ids) == 50


# =============================================================================================
# 2.2 Upload-Metadata


def test_metadata_echoed_verbatim(tus: TusHTTP) -> None:
    """A key without value is legal; HEAD echoes the raw header."""
    raw = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
    url = tus.new(5, metadata=raw)
    assert tus.head(url).headers.get("upload-metadata") == raw


def test_utf8_values(tus: TusHTTP) -> None:
    """Standard base64 of UTF-8 bytes (including '+' and '/' in the alphabet)."""
    raw = metadata_header([("filename", "résumé 日本語.pdf"), ("bin", bytes([0xFB, 0xFF, 0xBF]))])
    assert "+" in raw or "/" in raw
    url = tus.new(5, metadata=raw)
    assert tus.head(url).headers.get("upload-metadata") == raw


def test_whitespace_after_comma(tus: TusHTTP) -> None:
    """``a YQ==, b Yg==`` -> accepted, echoed as sent."""
    url = tus.new(5, metadata="a YQ==, b Yg==")
    assert tus.head(url).headers.get("upload-metadata") == "a YQ==, b Yg=="


@pytest.mark.parametrize(
    "value",
    [
        "k !!!",
        "k YQ",
        "k Y_-=",
        "a YQ==,a Yg==",
        "a,a",
        "a YQ==,,b Yg==",
        "a YQ==,",
        ",",
        "a b c",
        "a YQ== Yg==",
    ],
    ids=[
        "bad-base64",
        "missing-padding",
        "urlsafe-alphabet",
        "duplicate-key",
        "duplicate-bare-key",
        "empty-element",
        "trailing-empty-element",
        "only-comma",
        "three-tokens",
        "three-tokens-b64",
    ],
)
def test_strict_metadata_400(tus: TusHTTP, value: str) -> None:
    """Our choice is STRICT -> 400 ERR_INVALID_METADATA, no upload."""
    before = tus.snapshot()
    response = tus.create(5, metadata=value)
    assert_error(response, 400, errors.InvalidMetadata.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_large_metadata_accepted(tus: TusHTTP) -> None:
    """Uppy-style metadata (every meta field, ``relativePath`` "null",
    filename/filetype copies), over 8 KiB in total, is accepted and echoed verbatim."""
    pairs: list[tuple[str, str | bytes | None]] = [
        ("name", "holiday.mov"),
        ("type", "video/quicktime"),
        ("relativePath", "null"),
        ("filename", "holiday.mov"),
        ("filetype", "video/quicktime"),
    ]
    pairs += [(f"custom{i}", "v" * 60) for i in range(100)]
    raw = metadata_header(pairs)
    assert len(raw) > 8 * 1024
    url = tus.new(5, metadata=raw)
    assert tus.head(url).headers.get("upload-metadata") == raw


def test_metadata_not_smuggled_into_download_headers(tus: TusHTTP) -> None:
    """A filename with CR/LF never reaches a response header unsanitised."""
    raw = metadata_header(
        [("filename", 'evil"\r\nX-Injected: 1\r\n.txt'), ("filetype", "text/html\r\nX-B: 2")]
    )
    url = tus.new(5, metadata=raw)
    tus.append(url, 0, b"hello")
    response = tus.get(url)
    assert_status(response, 200)
    assert "x-injected" not in response.headers
    assert "x-b" not in response.headers
    for name, value in response.headers.multi_items():
        assert "\r" not in value, (name, value)
        assert "\n" not in value, (name, value)


# =============================================================================================
# 2.3 creation-with-upload


def test_creation_with_partial_body(tus: TusHTTP) -> None:
    """POST with 5 of 11 bytes -> 201, Location, ``Upload-Offset: 5``."""
    response = tus.create(11, body=b"hello")
    assert_status(response, 201)
    assert UPLOAD_URL_RE.match(response.headers["location"])
    assert response.headers.get("upload-offset") == "5"
    assert tus.offset(response.headers["location"]) == 5


def test_creation_with_full_body_completes(tus: TusHTTP) -> None:
    """All 11 bytes in the POST -> 201, ``Upload-Offset: 11``, complete."""
    response = tus.create(11, body=b"hello world")
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "11"
    url = response.headers["location"]
    head = tus.head(url)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == "11"
    assert tus.content(url) == b"hello world"


def test_creation_with_empty_body(tus: TusHTTP) -> None:
    """Content-Type set and Content-Length 0 -> 201, ``Upload-Offset: 0``."""
    response = tus.create(11, body=b"")
    assert response.request.headers.get("content-length") == "0"
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "0"


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream"], ids=["none", "octet-stream"]
)
def test_body_without_offset_content_type_ignored(tus: TusHTTP, content_type: str | None) -> None:
    """A body without the tus Content-Type is ignored (201, no Upload-Offset)."""
    response = tus.request(
        "POST",
        ENDPOINT,
        headers={"Upload-Length": "11", "Content-Type": content_type},
        content=b"hello",
    )
    assert_status(response, 201)
    assert "upload-offset" not in response.headers
    assert tus.offset(response.headers["location"]) == 0


def test_creation_body_longer_than_length_413(tus: TusHTTP) -> None:
    """Body > Upload-Length -> 413, checked before creating: nothing is stored."""
    before = tus.snapshot()
    response = tus.create(5, body=b"hello world")
    assert_error(response, 413, errors.SizeExceeded.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_expect_continue_oversized_rejected_early(make_client: MakeClient) -> None:
    """POST with ``Expect: 100-continue`` and an oversized length -> 413."""
    tus = make_client(max_size=10)
    response = tus.create(11, body=b"x" * 11, headers={"Expect": "100-continue"})
    assert_error(response, 413, errors.SizeExceeded.code)
    response = tus.create(10, body=b"x" * 10, headers={"Expect": "100-continue"})
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "10"


def test_creation_with_matching_checksum(tus: TusHTTP) -> None:
    """A matching checksum on creation-with-upload is verified -> 201."""
    response = tus.create(
        11, body=b"hello", headers={"Upload-Checksum": checksum_header("sha1", b"hello")}
    )
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "5"


def test_creation_with_mismatching_checksum_460_nothing_created(
    tus: TusHTTP,
) -> None:
    """Mismatch -> 460 ERR_CHECKSUM_MISMATCH and no upload exists."""
    before = tus.snapshot()
    response = tus.create(
        11, body=b"hello", headers={"Upload-Checksum": checksum_header("sha1", b"HELLO")}
    )
    assert_error(response, 460, errors.ChecksumMismatch.code)
    assert "location" not in response.headers
    assert tus.snapshot() == before


def test_partial_with_body(tus: TusHTTP) -> None:
    """``Upload-Concat: partial`` plus body -> 201 + Upload-Offset."""
    response = tus.create(5, concat="partial", body=b"hel")
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "3"


def test_creation_with_body_and_deferred_length(tus: TusHTTP) -> None:
    """Body + ``Upload-Defer-Length: 1`` -> offset advances, length stays deferred."""
    response = tus.create(defer=True, body=b"hello")
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "5"
    head = tus.head(response.headers["location"])
    assert head.headers["upload-offset"] == "5"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers


def test_creation_with_upload_then_continue(tus: TusHTTP) -> None:
    """Tus-js-client ``uploadDataDuringCreation``: POST with a body, then PATCH on."""
    data = os.urandom(3000)
    response = tus.create(len(data), body=data[:1000])
    assert_status(response, 201)
    url = response.headers["location"]
    offset = int(response.headers["upload-offset"])
    tus.append(url, offset, data[offset:])
    assert tus.content(url) == data


# =============================================================================================
# 2.4 creation-defer-length


def test_deferred_creation(tus: TusHTTP) -> None:
    """``Upload-Defer-Length: 1`` -> 201; HEAD offset 0, defer 1, no length."""
    url = tus.new(defer=True)
    head = tus.head(url)
    assert head.headers["upload-offset"] == "0"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers


@pytest.mark.parametrize("value", ["2", "true", "0", "01", "1.0"])
def test_bad_defer_value_400(tus: TusHTTP, value: str) -> None:
    """Upload-Defer-Length other than "1" -> 400 ERR_INVALID_UPLOAD_LENGTH_DEFER."""
    before = tus.snapshot()
    response = tus.create(headers={"Upload-Defer-Length": value})
    assert_error(response, 400, errors.InvalidDeferLength.code)
    assert tus.snapshot() == before


def test_length_and_defer_ambiguous_400(tus: TusHTTP) -> None:
    """Both headers -> 400 ERR_AMBIGUOUS_UPLOAD_LENGTH."""
    before = tus.snapshot()
    response = tus.create(10, defer=True)
    assert_error(response, 400, errors.AmbiguousLength.code)
    assert tus.snapshot() == before


def test_deferred_then_declared(tus: TusHTTP) -> None:
    """PATCH 5 bytes without a length (still deferred), then the length
    with the last 15 bytes -> complete, HEAD shows the length and no defer."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"a" * 5)
    head = tus.head(url)
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers
    response = tus.patch(url, 5, b"b" * 15, headers={"Upload-Length": "20"})
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "20"
    head = tus.head(url)
    assert head.headers.get("upload-length") == "20"
    assert head.headers.get("upload-offset") == "20"
    assert "upload-defer-length" not in head.headers
    assert tus.content(url) == b"a" * 5 + b"b" * 15


def test_length_declared_with_empty_final_patch(tus: TusHTTP) -> None:
    """PATCH at offset 8 with ``Upload-Length: 8`` and an empty
    body completes the upload (tuspy/tus-js-client stream sources)."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"12345678")
    response = tus.patch(url, 8, b"", headers={"Upload-Length": "8"})
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "8"
    head = tus.head(url)
    assert head.headers.get("upload-length") == "8"
    assert "upload-defer-length" not in head.headers
    assert tus.content(url) == b"12345678"


def test_length_change_after_set_400(tus: TusHTTP) -> None:
    """Once set, a different Upload-Length -> 400 ERR_UPLOAD_LENGTH_CHANGED."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"abc", headers={"Upload-Length": "10"})
    before = tus.snapshot()
    response = tus.patch(url, 3, b"def", headers={"Upload-Length": "12"})
    assert_error(response, 400, errors.LengthChanged.code)
    assert tus.offset(url) == 3
    assert tus.head(url).headers.get("upload-length") == "10"
    assert tus.snapshot() == before


def test_same_length_repeated_accepted(tus: TusHTTP) -> None:
    """Repeating the same Upload-Length after it is set is accepted
    (tus-js-client 4.x retries its final PATCH with it)."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"abc", headers={"Upload-Length": "10"})
    response = tus.patch(url, 3, b"defghij", headers={"Upload-Length": "10"})
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "10"
    assert tus.content(url) == b"abcdefghij"


def test_length_below_offset_400(tus: TusHTTP) -> None:
    """Upload-Length lower than the current offset -> 400; still deferred."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"abcdef")
    response = tus.patch(url, 6, b"", headers={"Upload-Length": "4"})
    assert_error(response, 400)
    head = tus.head(url)
    assert head.headers.get("upload-defer-length") == "1"
    assert head.headers["upload-offset"] == "6"


def test_length_on_non_deferred_upload_differs_400(tus: TusHTTP) -> None:
    """A different Upload-Length on a PATCH to a non-deferred upload -> 400."""
    url = tus.new(10)
    response = tus.patch(url, 0, b"abc", headers={"Upload-Length": "20"})
    assert_error(response, 400)
    assert tus.offset(url) == 0
    assert tus.head(url).headers["upload-length"] == "10"


def test_declared_length_over_max_413(make_client: MakeClient) -> None:
    """PATCH Upload-Length > Tus-Max-Size -> 413; still deferred."""
    tus = make_client(max_size=10)
    url = tus.new(defer=True)
    response = tus.patch(url, 0, b"abc", headers={"Upload-Length": "11"})
    assert_error(response, 413, errors.SizeExceeded.code)
    head = tus.head(url)
    assert head.headers.get("upload-defer-length") == "1"
    assert head.headers["upload-offset"] == "0"


def test_deferred_bytes_beyond_max_size_chunked(make_client: MakeClient) -> None:
    """A deferred upload receiving bytes past Tus-Max-Size -> 413; bytes up to the
    limit are kept."""
    tus = make_client(max_size=10)
    url = tus.new(defer=True)
    response = tus.patch(url, 0, iter([b"0123456", b"789abcdef"]))
    assert_error(response, 413, errors.SizeExceeded.code)
    assert tus.offset(url) == 10


def test_deferred_content_length_beyond_max_size(make_client: MakeClient) -> None:
    """With a Content-Length past the limit -> 413; never more than the limit kept."""
    tus = make_client(max_size=10)
    url = tus.new(defer=True)
    response = tus.patch(url, 0, b"x" * 15)
    assert_error(response, 413, errors.SizeExceeded.code)
    assert tus.offset(url) in (0, 10)


def test_deferred_without_length_never_completes(tus: TusHTTP) -> None:
    """(client bug, not fixed here): bytes alone never complete a deferred upload."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"abc")
    tus.append(url, 3, b"")
    head = tus.head(url)
    assert head.headers.get("upload-defer-length") == "1"
    assert_error(tus.get(url), 409, errors.NotFinished.code)


def test_tuskit_creation(tus: TusHTTP) -> None:
    """TUSKit POST (Upload-Length, filename/filetype/context metadata) -> 2xx +
    Location."""
    raw = f"filename {b64('a.jpg')},filetype {b64('image/jpeg')},context {b64('{}')}"
    response = tus.create(5, metadata=raw, headers={"TUS-Resumable": "1.0.0"}, version=None)
    assert_status(response, 201)
    assert UPLOAD_URL_RE.match(response.headers["location"])


def test_content_type_variants_on_creation(tus: TusHTTP) -> None:
    """The media-type compare also ignores case/parameters on POST."""
    response = tus.create(11, body=b"hello", content_type=f"{OFFSET_OCTET.upper()}; x=y")
    assert_status(response, 201)
    assert response.headers.get("upload-offset") == "5"


# =============================================================================================
# lifecycle hooks around creation


def test_created_and_empty_upload_finished_in_post(
    hooked: TusHTTP, events: RecordingListener
) -> None:
    """Creation fires ``created``; an empty upload also fires
    ``finished`` inside the POST (no PATCH will ever come)."""
    url = hooked.new(5)
    assert events.of(url) == ["created"]
    empty = hooked.new(0)
    assert events.of(empty) == ["created", "finished"]
    empty_no_ct = hooked.new(0, drop=("content-type", "content-length"))
    assert events.of(empty_no_ct) == ["created", "finished"]


def test_creation_with_full_body_fires_finished(hooked: TusHTTP, events: RecordingListener) -> None:
    """All bytes in the POST -> complete, and the completion hook fires."""
    response = hooked.create(11, body=b"hello world")
    assert_status(response, 201)
    assert events.of(response.headers["location"]) == ["created", "finished"]
    partial = hooked.create(11, body=b"hello")
    assert events.of(partial.headers["location"]) == ["created"]


def test_finished_fires_once_on_completion(hooked: TusHTTP, events: RecordingListener) -> None:
    """The PATCH that completes fires ``finished``; no-op PATCHes after
    completion do not fire it again."""
    url = hooked.new(defer=True)
    hooked.append(url, 0, b"abc")
    assert events.of(url) == ["created"]
    hooked.append(url, 3, b"de", headers={"Upload-Length": "5"})
    assert events.of(url) == ["created", "finished"]
    assert_status(hooked.patch(url, 5, b""), 204)
    assert events.of(url) == ["created", "finished"]


def test_mismatching_creation_fires_nothing(hooked: TusHTTP, events: RecordingListener) -> None:
    """A creation rejected with 460 leaves no trace, hooks included."""
    response = hooked.create(
        5, body=b"hello", headers={"Upload-Checksum": checksum_header("sha1", b"other")}
    )
    assert_status(response, 460)
    assert events.log == []


def test_verified_creation_announces_created_then_finished(
    hooked: TusHTTP, events: RecordingListener
) -> None:
    """With a matching checksum the upload is announced once its data verified."""
    response = hooked.create(
        5, body=b"hello", headers={"Upload-Checksum": checksum_header("sha1", b"hello")}
    )
    assert_status(response, 201)
    assert events.of(response.headers["location"]) == ["created", "finished"]
