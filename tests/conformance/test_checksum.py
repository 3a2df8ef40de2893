"""Checksums, and checksum-trailer, which must not be advertised.

See docs/protocol.md, "Checksums".
"""

from __future__ import annotations

import os

import pytest

from tusserver import errors

from .tusclient_http import (
    OFFSET_OCTET,
    MakeClient,
    TusHTTP,
    assert_error,
    assert_status,
    b64,
    checksum_header,
    csv_items,
    digest,
)

HELLO_WORLD = b"hello world"
ALGORITHMS = ["sha1", "sha256", "md5", "crc32"]


def test_checksum_advertised(tus: TusHTTP) -> None:
    """``checksum`` advertised with lowercase algorithm names
    including sha1; ``checksum-trailer`` is not (ASGI cannot read request trailers)."""
    headers = tus.options().headers
    extensions = csv_items(headers["tus-extension"])
    assert "checksum" in extensions
    assert "checksum-trailer" not in extensions
    names = csv_items(headers["tus-checksum-algorithm"])
    assert names == ALGORITHMS
    assert all(name == name.lower() for name in names)


def test_configured_subset(make_client: MakeClient) -> None:
    """The advertised list is the configured list; others are unsupported."""
    tus = make_client(checksum_algorithms=("sha1",))
    assert tus.options().headers["tus-checksum-algorithm"] == "sha1"
    url = tus.new(11)
    response = tus.patch(
        url, 0, HELLO_WORLD, headers={"Upload-Checksum": checksum_header("sha256", HELLO_WORLD)}
    )
    assert_error(response, 400, errors.UnsupportedChecksum.code)
    assert tus.offset(url) == 0


def test_spec_example_sha1(tus: TusHTTP) -> None:
    """The spec's own example value."""
    url = tus.new(11)
    response = tus.patch(
        url, 0, HELLO_WORLD, headers={"Upload-Checksum": "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="}
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "11"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_verifies(tus: TusHTTP, algorithm: str) -> None:
    """Each advertised algorithm accepts a matching checksum."""
    data = os.urandom(70_000)
    url = tus.new(len(data))
    response = tus.patch(
        url, 0, data, headers={"Upload-Checksum": checksum_header(algorithm, data)}
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == str(len(data))
    assert tus.content(url) == data


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_mismatch_460_chunk_discarded(tus: TusHTTP, algorithm: str) -> None:
    """Mismatch -> 460 ERR_CHECKSUM_MISMATCH (a 4xx,
    which tus-js-client treats as final; it never sends checksums), the chunk is
    discarded whole (offset unchanged, storage unchanged), and the same chunk re-sent with the
    right checksum succeeds (tuspy retry)."""
    url = tus.new(22)
    tus.append(url, 0, b"0123456789a")
    before = tus.snapshot()
    wrong = b64(bytes(len(digest(algorithm, b""))))
    response = tus.patch(url, 11, HELLO_WORLD, headers={"Upload-Checksum": f"{algorithm} {wrong}"})
    assert_error(response, 460, errors.ChecksumMismatch.code)
    assert tus.offset(url) == 11
    assert tus.snapshot() == before
    response = tus.patch(
        url, 11, HELLO_WORLD, headers={"Upload-Checksum": checksum_header(algorithm, HELLO_WORLD)}
    )
    assert_status(response, 204)
    assert tus.content(url) == b"0123456789a" + HELLO_WORLD


def test_spec_example_mismatch(tus: TusHTTP) -> None:
    """``sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=`` -> 460; HEAD shows offset 0."""
    url = tus.new(11)
    response = tus.patch(
        url, 0, HELLO_WORLD, headers={"Upload-Checksum": "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
    )
    assert_error(response, 460, errors.ChecksumMismatch.code)
    assert tus.offset(url) == 0


def test_hex_digest_rejected(tus: TusHTTP) -> None:
    """A hex digest instead of base64 -> 400 ERR_INVALID_CHECKSUM, never 204."""
    url = tus.new(11)
    before = tus.snapshot()
    response = tus.patch(
        url,
        0,
        HELLO_WORLD,
        headers={"Upload-Checksum": "sha1 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"},
    )
    assert_error(response, 400, errors.InvalidChecksum.code)
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


@pytest.mark.parametrize("name", ["sha3", "sha512", "blake2b", "md4", "crc32c", "sha-1"])
def test_unsupported_algorithm_400(tus: TusHTTP, name: str) -> None:
    """Unsupported algorithm -> 400 ERR_UNSUPPORTED_CHECKSUM_ALGORITHM, offset
    unchanged."""
    url = tus.new(11)
    before = tus.snapshot()
    response = tus.patch(
        url, 0, HELLO_WORLD, headers={"Upload-Checksum": f"{name} {b64(b'x' * 20)}"}
    )
    assert_error(response, 400, errors.UnsupportedChecksum.code)
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


@pytest.mark.parametrize(
    "value",
    [
        "sha1",
        "sha1 ",
        "sha1 !!!!",
        "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0",
        "sha1 Kq5s",
        "sha1 Kq5sNclPz7QV2-lfQIuc6R7oRu0=",
        "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0= extra",
        "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
    ],
    ids=[
        "no-space",
        "empty-hash",
        "not-base64",
        "missing-padding",
        "short-digest",
        "urlsafe-char",
        "three-tokens",
        "no-algorithm",
    ],
)
def test_malformed_header_400(tus: TusHTTP, value: str) -> None:
    """Malformed Upload-Checksum -> 400 ERR_INVALID_CHECKSUM, nothing written."""
    url = tus.new(11)
    before = tus.snapshot()
    response = tus.patch(url, 0, HELLO_WORLD, headers={"Upload-Checksum": value})
    assert_error(response, 400, errors.InvalidChecksum.code, errors.UnsupportedChecksum.code)
    if value in ("sha1", "sha1 ", "sha1 !!!!", "sha1 Kq5s"):
        assert response.text.startswith(errors.InvalidChecksum.code)
    assert tus.offset(url) == 0
    assert tus.snapshot() == before


@pytest.mark.parametrize("name", ["SHA1", "Sha256", "MD5", "CRC32"])
def test_algorithm_names_case_insensitive(tus: TusHTTP, name: str) -> None:
    """Names are matched case-insensitively."""
    url = tus.new(11)
    value = checksum_header(name.lower(), HELLO_WORLD).split(" ", 1)[1]
    response = tus.patch(url, 0, HELLO_WORLD, headers={"Upload-Checksum": f"{name} {value}"})
    assert_status(response, 204)


def test_mismatch_with_declared_length_declares_nothing(tus: TusHTTP) -> None:
    """A 460 on a PATCH that also declares Upload-Length leaves the length
    deferred."""
    url = tus.new(defer=True)
    before = tus.snapshot()
    response = tus.patch(
        url,
        0,
        HELLO_WORLD,
        headers={
            "Upload-Length": "11",
            "Upload-Checksum": checksum_header("sha1", b"something else"),
        },
    )
    assert_error(response, 460, errors.ChecksumMismatch.code)
    head = tus.head(url)
    assert head.headers["upload-offset"] == "0"
    assert head.headers.get("upload-defer-length") == "1"
    assert "upload-length" not in head.headers
    assert tus.snapshot() == before


def test_checksum_on_empty_body(tus: TusHTTP) -> None:
    """An empty body with the empty-input digest -> 204, offset unchanged;
    a wrong digest for the empty body -> 460."""
    url = tus.new(11)
    response = tus.patch(url, 0, b"", headers={"Upload-Checksum": checksum_header("sha1", b"")})
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "0"
    response = tus.patch(url, 0, b"", headers={"Upload-Checksum": checksum_header("sha1", b"x")})
    assert_error(response, 460, errors.ChecksumMismatch.code)
    assert tus.offset(url) == 0


def test_checksum_on_chunked_body(tus: TusHTTP) -> None:
    """Verification covers the whole (chunked) body."""
    url = tus.new(11)
    response = tus.patch(
        url,
        0,
        iter([b"hello", b" ", b"world"]),
        headers={"Upload-Checksum": checksum_header("sha256", HELLO_WORLD)},
    )
    assert_status(response, 204)
    assert response.headers["upload-offset"] == "11"
    url2 = tus.new(11)
    response = tus.patch(
        url2,
        0,
        iter([b"hello", b" ", b"w0rld"]),
        headers={"Upload-Checksum": checksum_header("sha256", HELLO_WORLD)},
    )
    assert_error(response, 460, errors.ChecksumMismatch.code)
    assert tus.offset(url2) == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Content-Type": "text/plain"}, 415, id="content-type-before-algorithm"),
        pytest.param({"Upload-Offset": "3"}, 409, id="offset-before-algorithm"),
        pytest.param({"Content-Length": "99"}, 413, id="size-before-algorithm"),
    ],
)
def test_check_order_before_checksum(tus: TusHTTP, headers: dict[str, str], status: int) -> None:
    """415, 409 and 413 are decided before the checksum algorithm."""
    url = tus.new(11)
    merged = {
        "Content-Type": OFFSET_OCTET,
        "Upload-Offset": "0",
        "Upload-Checksum": f"sha3 {b64(b'x' * 20)}",
        **headers,
    }
    response = tus.request("PATCH", url, headers=merged, content=HELLO_WORLD)
    assert_status(response, status)
