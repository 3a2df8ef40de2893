"""Tests for tusserver.tus.protocol: one parametrized table per helper.

Why each rule is what it is: docs/protocol.md, cited by section heading.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from tusserver import errors
from tusserver.models import ConcatKind, is_valid_upload_id, new_upload_id
from tusserver.tus.protocol import (
    DIGEST_SIZES,
    MAX_CONCAT_PARTS,
    MAX_INT,
    TUS_CONTENT_TYPE,
    Checksum,
    ConcatRequest,
    encode_metadata,
    format_http_date,
    is_offset_content_type,
    new_hasher,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_non_negative_int,
    request_base_url,
)

ID_A = "0123456789abcdef0123456789abcdef"
ID_B = "fedcba9876543210fedcba9876543210"
ALL_ALGORITHMS = ("sha1", "sha256", "md5", "crc32")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def assert_tus_error(
    info: pytest.ExceptionInfo[errors.TusError], cls: type[errors.TusError]
) -> None:
    """The exact class (not a sibling), its stable code and its status."""
    assert type(info.value) is cls
    assert info.value.code == cls.code
    assert info.value.status == cls.status


# --- constants and upload ids -----------------------------------------------------------------


def test_constants() -> None:
    assert TUS_CONTENT_TYPE == "application/offset+octet-stream"
    assert MAX_INT == 9223372036854775807
    assert DIGEST_SIZES == {"sha1": 20, "sha256": 32, "md5": 16, "crc32": 4}


def test_new_upload_id_is_valid_and_unique() -> None:
    # 128 random bits as 32 lowercase hex characters, never reused.
    ids = {new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert all(is_valid_upload_id(value) for value in ids)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (ID_A, True),
        ("0" * 32, True),
        ("f" * 32, True),
        (ID_A.upper(), False),  # lowercase only
        (ID_A[:-1], False),  # 31 chars
        (ID_A + "0", False),  # 33 chars
        (ID_A + "\n", False),  # "$" would match before a trailing newline; fullmatch does not
        ("\n" + ID_A, False),
        (ID_A[:-1] + "g", False),
        ("", False),
        ("../" + ID_A[3:], False),
        (ID_A[:-1] + "\x00", False),
        ("٣" * 32, False),  # non-ASCII digits
    ],
)
def test_is_valid_upload_id(value: str, valid: bool) -> None:
    assert is_valid_upload_id(value) is valid


# --- parse_non_negative_int ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),  # header absent
        ("0", 0),
        ("5", 5),
        ("007", 7),
        (" 5", 5),  # surrounding optional whitespace is trimmed
        ("5 ", 5),
        ("\t5\t", 5),
        (str(MAX_INT), MAX_INT),
        ("0" * 18 + "1", 1),  # 19 digits is the limit, not the value
    ],
)
def test_parse_non_negative_int_accepts(value: str | None, expected: int | None) -> None:
    assert parse_non_negative_int(value, errors.InvalidOffset) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "\t",
        "abc",
        "+5",  # tusd's ParseInt accepts it; we do not
        "-1",
        "-0",
        "1.5",
        " 5x",
        "5 5",  # inner space
        "1_000",  # int() accepts underscores
        "0x10",
        "1e3",
        "٣",  # ARABIC-INDIC DIGIT THREE: str.isdigit() and int() accept it
        "\uff15",  # FULLWIDTH DIGIT FIVE
        "\u00a05",  # NO-BREAK SPACE is not HTTP whitespace
        "5\n",
        str(MAX_INT + 1),  # 2**63
        "1" * 20,  # 20 digits
        "0" * 20,  # 20 digits, even though the value is small
        "9" * 5000,  # never reaches int()
    ],
)
@pytest.mark.parametrize("error", [errors.InvalidOffset, errors.InvalidLength, errors.BadRequest])
def test_parse_non_negative_int_rejects(value: str, error: type[errors.TusError]) -> None:
    with pytest.raises(error) as info:
        parse_non_negative_int(value, error)
    assert_tus_error(info, error)
    assert len(info.value.message) < 120  # the 5000-digit input is not echoed


# --- is_offset_content_type ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/offset+octet-stream", True),
        ("Application/Offset+Octet-Stream", True),  # case-insensitive
        ("APPLICATION/OFFSET+OCTET-STREAM", True),
        ("application/offset+octet-stream; charset=utf-8", True),  # params ignored
        ("application/offset+octet-stream;charset=utf-8", True),
        (" application/offset+octet-stream ", True),
        ("application/offset+octet-stream ;x=y", True),
        (None, False),
        ("", False),
        ("application/octet-stream", False),
        ("application/offset+octet-stream2", False),
        ("application/offset+octet-stream, text/plain", False),
        ("text/plain; application/offset+octet-stream", False),
        ("application/offset octet-stream", False),
    ],
)
def test_is_offset_content_type(value: str | None, expected: bool) -> None:
    assert is_offset_content_type(value) is expected


# --- parse_metadata ---------------------------------------------------------

UPPY_META = {  # Uppy sends every file.meta field, "null" literal included
    "name": "holiday.mp4",
    "type": "video/mp4",
    "relativePath": "null",
    "filename": "holiday.mp4",
    "filetype": "video/mp4",
    "description": "é" * 3200,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),  # header absent
        ("", {}),  # tuspy always sends the header, empty without metadata
        ("   ", {}),
        ("\t", {}),
        ("a YQ==", {"a": "a"}),
        (
            # the spec example, a key without a value
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
            {"filename": "world_domination_plan.pdf", "is_confidential": None},
        ),
        ("a YQ==, b Yg==", {"a": "a", "b": "b"}),  # whitespace after the comma
        (" a YQ== ,\tb Yg==\t", {"a": "a", "b": "b"}),  # each element trimmed
        ("a ", {"a": None}),  # tusd renders empty values as "key "
        ("a", {"a": None}),
        # UTF-8 text, e.g. a unicode filename
        ("filename " + b64("Résumé 履歴書 🎬.pdf".encode()), {"filename": "Résumé 履歴書 🎬.pdf"}),
        ("k " + b64(b"line1\r\nX-Injected: y"), {"k": "line1\r\nX-Injected: y"}),  # callers
        ("x-custom_key.1~!#$% YQ==", {"x-custom_key.1~!#$%": "a"}),  # any printable ASCII key
        ("A YQ==,a Yg==", {"A": "a", "a": "b"}),  # keys are case-sensitive: not duplicates
        # Trimming happens before splitting, so a leading space never yields an empty key:
        # the element is the bare key "YQ==".
        (" YQ==", {"YQ==": None}),
        (encode_metadata(UPPY_META), UPPY_META),  # header over 8 KiB accepted
        # values are bytes; non-UTF-8 is legal and kept lossy in the decoded form
        ("a " + b64(b"\xff\xfe"), {"a": "\ufffd\ufffd"}),
    ],
)
def test_parse_metadata_accepts(raw: str | None, expected: dict[str, str | None]) -> None:
    assert parse_metadata(raw) == expected


def test_uppy_header_is_over_8_kib() -> None:
    assert len(encode_metadata(UPPY_META)) > 8 * 1024


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        # Strict, our product decision: one bad pair rejects the whole header
        ("k !!!", "base64"),  # bad base64
        ("a YQ==,k !!!", "base64"),
        ("a YQ", "base64"),  # unpadded
        ("a YQ=", "base64"),
        ("a YQ===", "base64"),
        ("a YR==", "base64"),  # non-canonical: non-zero pad bits
        ("a Y Q==", "one space"),
        ("a -_8=", "base64"),  # URL-safe alphabet is not standard base64
        ("a b c", "one space"),  # three tokens
        ("a  YQ==", "one space"),  # two spaces make three tokens
        ("a\tYQ==", "invalid key"),  # tab is not the separator; it lands in the key
        ("ключ YQ==", "invalid key"),  # non-ASCII key
        ("k\x00 YQ==", "invalid key"),
        ("k\x7f YQ==", "invalid key"),
        ("a " + b64(b"a")[:-2] + "\u00e9=", "base64"),  # non-ASCII in the value
        ("a YQ==,a Yg==", "duplicate key 'a'"),  # duplicates rejected
        ("a,a", "duplicate key 'a'"),
        ("a YQ==,,b", "empty element"),  # empty element
        ("a YQ==,", "empty element"),  # trailing comma
        (",a YQ==", "empty element"),
        ("a YQ==, ,b", "empty element"),
        (",", "empty element"),
    ],
)
def test_parse_metadata_rejects(raw: str, problem: str) -> None:
    with pytest.raises(errors.InvalidMetadata) as info:
        parse_metadata(raw)
    assert_tus_error(info, errors.InvalidMetadata)
    assert problem in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        "k" * 5000 + " !!!",  # long key, bad value
        "k" * 5000 + ",k" + "k" * 4999,  # long duplicate key
        "\u00e9" * 5000 + " YQ==",  # long non-ASCII key
        "k\r\nX-Evil: 1" + "x" * 200 + " YQ==",  # CR/LF in a key
    ],
)
def test_parse_metadata_error_does_not_echo_much_input(raw: str) -> None:
    with pytest.raises(errors.InvalidMetadata) as info:
        parse_metadata(raw)
    message = info.value.message
    assert "k" * 65 not in message
    assert "\u00e9" * 65 not in message
    assert "\r" not in message
    assert "\n" not in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ""),
        ({"a": "a"}, "a YQ=="),
        ({"a": "a", "b": None}, "a YQ==,b"),
        ({"b": None, "a": "a"}, "b,a YQ=="),  # order kept
        ({"filename": "é"}, "filename w6k="),
        ({"a": ""}, "a"),  # "" has no base64 spelling that survives trimming
    ],
)
def test_encode_metadata(values: dict[str, str | None], expected: str) -> None:
    assert encode_metadata(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        {"a": "a"},
        {"filename": "Résumé 履歴書 🎬.pdf", "is_confidential": None},
        {"k": "a,b c\r\n=="},  # delimiters inside values are base64-protected
        UPPY_META,
    ],
)
def test_encode_metadata_round_trips(values: dict[str, str | None]) -> None:
    assert parse_metadata(encode_metadata(values)) == values


@pytest.mark.parametrize(
    "values",
    [
        {"": "a"},
        {"a b": "a"},
        {"a,b": "a"},
        {"ключ": "a"},
        {"k\n": "a"},
        {"k": "\ud800"},  # lone surrogate cannot be UTF-8
    ],
)
def test_encode_metadata_rejects(values: dict[str, str | None]) -> None:
    with pytest.raises(errors.InvalidMetadata) as info:
        encode_metadata(values)
    assert_tus_error(info, errors.InvalidMetadata)


# --- parse_concat -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "base_path", "expected"),
    [
        (None, "/files/", None),  # header absent
        ("partial", "/files/", ConcatRequest(ConcatKind.PARTIAL, ())),
        (" partial\t", "/files/", ConcatRequest(ConcatKind.PARTIAL, ())),
        # relative paths
        (f"final;/files/{ID_A} /files/{ID_B}", "/files/", (ID_A, ID_B)),
        # order is kept
        (f"final;/files/{ID_B} /files/{ID_A}", "/files/", (ID_B, ID_A)),
        # absolute URLs, as tus-js-client sends; matched by path, not host
        (
            f"final;https://up.example.com/files/{ID_A} http://10.0.0.1:8080/files/{ID_B}",
            "/files/",
            (ID_A, ID_B),
        ),
        (f"final;HTTPS://h/files/{ID_A}", "/files/", (ID_A,)),
        (f"final;http://[::1]:8080/files/{ID_A}", "/files/", (ID_A,)),
        # space after ';' and a trailing slash
        (f"final; /files/{ID_A} /files/{ID_B}/", "/files/", (ID_A, ID_B)),
        (f"final;\t/files/{ID_A}\t\t/files/{ID_B} ", "/files/", (ID_A, ID_B)),
        (f"final;https://h/files/{ID_A}/", "/files/", (ID_A,)),
        # percent-encoded characters are decoded before matching
        (f"final;/%66iles/{ID_A}", "/files/", (ID_A,)),
        # other base paths
        (f"final;/api/tus/{ID_A}", "/api/tus/", (ID_A,)),
        (f"final;https://h/{ID_A}", "/", (ID_A,)),
        (
            "final;" + " ".join(f"/files/{n:032x}" for n in range(MAX_CONCAT_PARTS)),
            "/files/",
            tuple(f"{n:032x}" for n in range(MAX_CONCAT_PARTS)),
        ),
    ],
)
def test_parse_concat_accepts(
    raw: str | None, base_path: str, expected: ConcatRequest | tuple[str, ...] | None
) -> None:
    if isinstance(expected, tuple):
        expected = ConcatRequest(ConcatKind.FINAL, expected)
    assert parse_concat(raw, base_path) == expected


@pytest.mark.parametrize(
    ("raw", "base_path"),
    [
        ("final;", "/files/"),
        ("final; ", "/files/"),
        ("foo", "/files/"),
        ("partial;x", "/files/"),
        ("", "/files/"),
        ("Partial", "/files/"),  # exact token
        ("FINAL;/files/" + ID_A, "/files/"),
        ("final /files/" + ID_A, "/files/"),
        ("final:/files/" + ID_A, "/files/"),
        ("partial final;/files/" + ID_A, "/files/"),
        # bad ids
        ("final;/files/abc", "/files/"),
        ("final;/files/" + ID_A.upper(), "/files/"),
        ("final;/files/" + ID_A + "0", "/files/"),
        ("final;/files/", "/files/"),
        ("final;/files/" + ID_A + "//", "/files/"),  # only one trailing slash
        ("final;/files/" + ID_A + "/extra", "/files/"),
        # traversal
        ("final;/files/%2e%2e/" + ID_A, "/files/"),
        ("final;/files/%2E%2E/files/" + ID_A, "/files/"),
        ("final;/files/../files/" + ID_A, "/files/"),
        ("final;/other/../files/" + ID_A, "/files/"),  # no normalisation: must start with base
        # wrong base path
        ("final;/uploads/" + ID_A, "/files/"),
        ("final;/files/" + ID_A, "/api/files/"),
        ("final;/filesx/" + ID_A, "/files/"),
        ("final;files/" + ID_A, "/files/"),  # relative without leading slash
        ("final;" + ID_A, "/files/"),
        # NUL and control characters, raw or encoded
        ("final;/files/" + ID_A + "\x00", "/files/"),
        ("final;/files/" + ID_A + "%00", "/files/"),
        ("final;/files/\x00" + ID_A, "/files/"),
        ("final;/fi\tles/" + ID_A, "/files/"),  # urlsplit would silently drop the tab
        ("final;/files/" + ID_A + "\r\n", "/files/"),
        ("final;/files/" + ID_A[:-2] + "%ff", "/files/"),  # not UTF-8
        ("final;/files/" + ID_A + "\u00a0", "/files/"),  # NBSP is not a list separator
        # queries and fragments
        ("final;/files/" + ID_A + "?x=1", "/files/"),
        ("final;/files/" + ID_A + "?", "/files/"),
        ("final;/files/" + ID_A + "#frag", "/files/"),
        ("final;https://h/files/" + ID_A + "?a", "/files/"),
        # schemes and authorities
        ("final;ftp://h/files/" + ID_A, "/files/"),
        ("final;http:/files/" + ID_A, "/files/"),
        ("final;//h/files/" + ID_A, "/files/"),
        ("final;http://[::1/files/" + ID_A, "/files/"),
        ("final;javascript:/files/" + ID_A, "/files/"),
        # one bad URL spoils the list
        (f"final;/files/{ID_A} /files/nope /files/{ID_B}", "/files/"),
        # too many
        ("final;" + " ".join(f"/files/{n:032x}" for n in range(MAX_CONCAT_PARTS + 1)), "/files/"),
        # one partial named twice (it would be copied twice)
        (f"final;/files/{ID_A} /files/{ID_B} /files/{ID_A}", "/files/"),
    ],
)
def test_parse_concat_rejects(raw: str, base_path: str) -> None:
    with pytest.raises(errors.InvalidConcat) as info:
        parse_concat(raw, base_path)
    assert_tus_error(info, errors.InvalidConcat)
    assert "\n" not in info.value.message
    assert len(info.value.message) < 200


# --- checksums --------------------------------------------------------------------

HELLO = b"hello world"


@pytest.mark.parametrize(
    ("algorithm", "chunks", "digest"),
    [
        ("sha1", [HELLO], base64.b64decode("Kq5sNclPz7QV2+lfQIuc6R7oRu0=")),
        ("sha1", [b"hello", b" ", b"world"], base64.b64decode("Kq5sNclPz7QV2+lfQIuc6R7oRu0=")),
        ("md5", [HELLO], bytes.fromhex("5eb63bbbe01eeed093cb22bb8f5acdc3")),
        (
            "sha256",
            [HELLO],
            bytes.fromhex("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
        ),
        ("crc32", [b"123456789"], bytes.fromhex("cbf43926")),  # the CRC-32 check value
        ("crc32", [b"1234", b"", b"56789"], bytes.fromhex("cbf43926")),  # running value
        ("crc32", [HELLO], bytes.fromhex("0d4a1185")),  # leading zero byte kept
        ("crc32", [], bytes(4)),
        ("sha1", [], bytes.fromhex("da39a3ee5e6b4b0d3255bfef95601890afd80709")),
    ],
)
def test_new_hasher(algorithm: str, chunks: list[bytes], digest: bytes) -> None:
    hasher = new_hasher(algorithm)
    for chunk in chunks:
        hasher.update(chunk)
    assert hasher.digest() == digest
    assert len(digest) == DIGEST_SIZES[algorithm]


@pytest.mark.parametrize("algorithm", ["sha3", "SHA1", "sha512", ""])
def test_new_hasher_rejects_unknown(algorithm: str) -> None:
    with pytest.raises(errors.UnsupportedChecksum) as info:
        new_hasher(algorithm)
    assert_tus_error(info, errors.UnsupportedChecksum)


def _sha1_hello() -> bytes:
    hasher = new_hasher("sha1")
    hasher.update(HELLO)
    return hasher.digest()


@pytest.mark.parametrize(
    ("raw", "supported", "expected"),
    [
        (None, ALL_ALGORITHMS, None),  # header absent
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, ("sha1", _sha1_hello())),
        # well-formed but wrong; parsing succeeds, the comparison yields 460 later
        ("sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=", ALL_ALGORITHMS, ("sha1", bytes(20))),
        # uppercase accepted and normalised
        ("SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, ("sha1", _sha1_hello())),
        ("Sha256 " + b64(bytes(32)), ("sha256",), ("sha256", bytes(32))),
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ("SHA1",), ("sha1", _sha1_hello())),
        (" md5 " + b64(bytes(16)) + "\t", ALL_ALGORITHMS, ("md5", bytes(16))),
        ("crc32 DUoRhQ==", ALL_ALGORITHMS, ("crc32", bytes.fromhex("0d4a1185"))),
    ],
)
def test_parse_checksum_accepts(
    raw: str | None, supported: tuple[str, ...], expected: tuple[str, bytes] | None
) -> None:
    result = parse_checksum(raw, supported)
    assert result == (Checksum(*expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("raw", "supported", "error"),
    [
        # unsupported algorithm -> 400 before the body is read
        ("sha3 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.UnsupportedChecksum),
        ("sha512 " + b64(bytes(64)), ALL_ALGORITHMS, errors.UnsupportedChecksum),
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ("md5", "crc32"), errors.UnsupportedChecksum),
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", (), errors.UnsupportedChecksum),
        ("sha512 " + b64(bytes(64)), ("sha512",), errors.UnsupportedChecksum),  # cannot compute
        ("\u017fha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.UnsupportedChecksum),
        # malformed
        ("", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("   ", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("sha1", ALL_ALGORITHMS, errors.InvalidChecksum),  # no space
        ("sha1 ", ALL_ALGORITHMS, errors.InvalidChecksum),  # empty hash
        ("sha1Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),
        (" Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("sha1  Kq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("sha1 Kq5s NclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("sha1\tKq5sNclPz7QV2+lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("sha1 !!!!", ALL_ALGORITHMS, errors.InvalidChecksum),  # non-base64
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0", ALL_ALGORITHMS, errors.InvalidChecksum),  # unpadded
        ("sha1 Kq5sNclPz7QV2-lfQIuc6R7oRu0=", ALL_ALGORITHMS, errors.InvalidChecksum),  # url-safe
        ("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\n", ALL_ALGORITHMS, errors.InvalidChecksum),
        # hex instead of base64 -> 400 (wrong decoded length), never 204
        ("sha1 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed", ALL_ALGORITHMS, errors.InvalidChecksum),
        ("md5 5eb63bbbe01eeed093cb22bb8f5acdc3", ALL_ALGORITHMS, errors.InvalidChecksum),
        (
            "sha256 b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            ALL_ALGORITHMS,
            errors.InvalidChecksum,
        ),
        ("crc32 0d4a1185", ALL_ALGORITHMS, errors.InvalidChecksum),
        # wrong digest size for the algorithm
        ("sha1 " + b64(bytes(16)), ALL_ALGORITHMS, errors.InvalidChecksum),
        ("md5 " + b64(bytes(20)), ALL_ALGORITHMS, errors.InvalidChecksum),
        ("crc32 " + b64(bytes(5)), ALL_ALGORITHMS, errors.InvalidChecksum),
    ],
)
def test_parse_checksum_rejects(
    raw: str, supported: tuple[str, ...], error: type[errors.TusError]
) -> None:
    with pytest.raises(error) as info:
        parse_checksum(raw, supported)
    assert_tus_error(info, error)
    assert info.value.status == 400


# --- format_http_date ------------------------------------------------------------------

IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$"
)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1403712000, "Wed, 25 Jun 2014 16:00:00 GMT"),  # the spec's example
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (1704067199.999, "Sun, 31 Dec 2023 23:59:59 GMT"),  # fractions truncated
        (1709164800, "Thu, 29 Feb 2024 00:00:00 GMT"),  # two-digit day
        (4102444800, "Fri, 01 Jan 2100 00:00:00 GMT"),
    ],
)
def test_format_http_date(timestamp: float, expected: str) -> None:
    assert format_http_date(timestamp) == expected
    assert IMF_FIXDATE.fullmatch(format_http_date(timestamp))


# --- request_base_url ------------------------------------------------------------

SERVER = ("127.0.0.1", 8080)
EVIL = "evil.com\r\nX: y"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Host header, no proxy
        ({"host": "up.example.com"}, "http://up.example.com"),
        ({"host": "up.example.com:8443", "scheme": "https"}, "https://up.example.com:8443"),
        ({"host": "[::1]:8080"}, "http://[::1]:8080"),
        ({"host": " up.example.com "}, "http://up.example.com"),
        # fallback to the server address when Host is absent or unsafe
        ({"host": None}, "http://127.0.0.1:8080"),
        ({"host": None, "server": ("::1", 8080)}, "http://[::1]:8080"),
        ({"host": None, "server": ("10.0.0.1", 80)}, "http://10.0.0.1"),  # default port
        ({"host": None, "server": ("10.0.0.1", 443), "scheme": "https"}, "https://10.0.0.1"),
        ({"host": None, "server": ("10.0.0.1", 443)}, "http://10.0.0.1:443"),
        ({"host": EVIL}, "http://127.0.0.1:8080"),
        ({"host": "a b"}, "http://127.0.0.1:8080"),
        ({"host": ""}, "http://127.0.0.1:8080"),
        ({"host": "evil.com/path"}, "http://127.0.0.1:8080"),
        ({"host": "user@evil.com"}, "http://127.0.0.1:8080"),
        ({"host": "a" * 256}, "http://127.0.0.1:8080"),
        ({"host": "a" * 255}, "http://" + "a" * 255),
        ({"host": None, "server": None}, "http://localhost"),
        ({"host": EVIL, "server": None}, "http://localhost"),
        ({"scheme": "HTTPS"}, "https://h"),
        ({"scheme": "ws"}, "http://h"),
        # forwarded headers ignored unless the proxy is trusted
        (
            {"headers": {"x-forwarded-proto": "https", "x-forwarded-host": "pub.example"}},
            "http://h",
        ),
        ({"headers": {"forwarded": "proto=https;host=pub.example"}}, "http://h"),
        # trusted: X-Forwarded-*
        (
            {
                "trust_proxy": True,
                "headers": {"x-forwarded-proto": "https", "x-forwarded-host": "pub.example"},
            },
            "https://pub.example",
        ),
        (
            {
                "trust_proxy": True,
                "headers": {"x-forwarded-proto": "https, http", "x-forwarded-host": "a.ex, b.ex"},
            },
            "https://a.ex",
        ),
        ({"trust_proxy": True, "headers": {"x-forwarded-proto": "HTTPS"}}, "https://h"),
        ({"trust_proxy": True, "headers": {"x-forwarded-proto": "ftp"}}, "http://h"),
        ({"trust_proxy": True, "headers": {"x-forwarded-proto": "javascript"}}, "http://h"),
        ({"trust_proxy": True, "headers": {"x-forwarded-host": EVIL}}, "http://h"),
        ({"trust_proxy": True, "headers": {"x-forwarded-host": "a b"}}, "http://h"),
        ({"trust_proxy": True, "headers": {"x-forwarded-host": ""}}, "http://h"),
        # header names are case-insensitive
        ({"trust_proxy": True, "headers": {"X-Forwarded-Proto": "https"}}, "https://h"),
        # trusted: RFC 7239 Forwarded wins over X-Forwarded-*
        (
            {
                "trust_proxy": True,
                "headers": {
                    "forwarded": "for=192.0.2.60;proto=https;host=fwd.example",
                    "x-forwarded-proto": "http",
                    "x-forwarded-host": "xfh.example",
                },
            },
            "https://fwd.example",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": 'Proto="https"; Host="[::1]:8443"'}},
            "https://[::1]:8443",
        ),
        (
            {  # first element only
                "trust_proxy": True,
                "headers": {"forwarded": "host=first.example, host=second.example;proto=https"},
            },
            "http://first.example",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}},
            "https://h",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": 'host="a\\.ex"'}},  # quoted-pair
            "http://a.ex",
        ),
        (
            {  # unsafe Forwarded host -> next source (X-Forwarded-Host)
                "trust_proxy": True,
                "headers": {"forwarded": 'host="evil.com\r\nX: y"', "x-forwarded-host": "ok.ex"},
            },
            "http://ok.ex",
        ),
        (
            {  # unparsable Forwarded -> ignored as a whole
                "trust_proxy": True,
                "headers": {"forwarded": "proto=https;host", "x-forwarded-proto": "http"},
            },
            "http://h",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": "proto=https;proto=http"}},  # repeat
            "http://h",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": "proto=gopher;host=a b"}},
            "http://h",
        ),
        (
            {"trust_proxy": True, "headers": {"forwarded": 'host="a b"', "x-forwarded-host": EVIL}},
            "http://h",
        ),
        (
            {  # every proxy host unsafe and Host unsafe -> server address
                "trust_proxy": True,
                "host": EVIL,
                "headers": {"forwarded": 'host="a b"', "x-forwarded-host": EVIL},
            },
            "http://127.0.0.1:8080",
        ),
    ],
)
def test_request_base_url(kwargs: dict[str, Any], expected: str) -> None:
    arguments: dict[str, Any] = {
        "scheme": "http",
        "host": "h",
        "server": SERVER,
        "headers": {},
        "trust_proxy": False,
    }
    arguments.update(kwargs)
    result = request_base_url(**arguments)
    assert result == expected
    assert not result.endswith("/")
    assert re.fullmatch(r"https?://[A-Za-z0-9.:\[\]-]+", result)
