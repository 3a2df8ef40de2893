"""Hostile and malformed input: every case is a 4xx (never 5xx) with an ``ERR_`` code, and
requests that must not change anything leave the data dir byte-identical (names, sizes and
sha256 of every file).

Upload ids are driven through raw ASGI so paths reach the app exactly as a server would
deliver them (httpx would normalise ``../`` away on the client side).
"""

from __future__ import annotations

import pytest

from .tusclient_http import (
    ERROR_BODY_RE,
    OFFSET_OCTET,
    MakeClient,
    RawResponse,
    TusHTTP,
    assert_4xx_err,
    describe,
    upload_id,
    upload_path,
)

# Integer header values that must never be accepted. Python's int() happily reads several of
# them ("+5", "1_000", " 5", non-ASCII digits), which is exactly why they are here.
BAD_INTEGERS: list[tuple[str, str | bytes]] = [
    ("negative-1", "-1"),
    ("negative-5", "-5"),
    ("2**63", str(2**63)),
    ("10**30", str(10**30)),
    ("400-digits", "9" * 400),
    ("non-numeric", "abc"),
    ("plus", "+5"),
    ("decimal", "1.5"),
    ("empty", ""),
    ("hex", "0x10"),
    ("exponent", "1e3"),
    ("underscore", "1_000"),
    ("inner-space", "5 5"),
    ("arabic-indic", "\u0663".encode()),
    ("fullwidth", "\uff15".encode()),
    ("superscript", "\u00b2".encode()),
    ("negative-zero", "-0"),
]

INTEGER_PARAMS = [pytest.param(v, id=i) for i, v in BAD_INTEGERS]


def unchanged(tus: TusHTTP, before: dict[str, tuple[int, str]]) -> None:
    after = tus.snapshot()
    assert after == before, {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(after) & set(before) if after[k] != before[k]),
    }


# ---------------------------------------------------------------------------------------------
# lengths and offsets


@pytest.mark.parametrize("value", INTEGER_PARAMS)
def test_bad_upload_length_on_post(tus: TusHTTP, value: str | bytes) -> None:
    """Bad or huge Upload-Length -> 4xx ERR_, nothing created."""
    tus.new(10)
    before = tus.snapshot()
    response = tus.create(headers={"Upload-Length": value})
    assert_4xx_err(response)
    assert "location" not in response.headers
    unchanged(tus, before)


@pytest.mark.parametrize("value", INTEGER_PARAMS)
def test_bad_upload_offset_on_patch(tus: TusHTTP, value: str | bytes) -> None:
    """Bad or huge Upload-Offset -> 4xx ERR_, nothing written."""
    url = tus.new(10)
    before = tus.snapshot()
    response = tus.patch(url, None, b"abc", headers={"Upload-Offset": value})
    assert_4xx_err(response)
    unchanged(tus, before)
    assert tus.offset(url) == 0


@pytest.mark.parametrize("value", INTEGER_PARAMS)
def test_bad_upload_length_on_deferred_patch(tus: TusHTTP, value: str | bytes) -> None:
    """A bad declared length -> 4xx ERR_; the length stays deferred."""
    url = tus.new(defer=True)
    tus.append(url, 0, b"ab")
    before = tus.snapshot()
    response = tus.patch(url, 2, b"c", headers={"Upload-Length": value})
    assert_4xx_err(response)
    unchanged(tus, before)
    head = tus.head(url)
    assert head.headers.get("upload-defer-length") == "1"
    assert head.headers["upload-offset"] == "2"


@pytest.mark.parametrize("value", ["0", "2", "true", "yes", "-1", "+1", "01", "1.0", "\u0661", ""])
def test_bad_upload_defer_length(tus: TusHTTP, value: str) -> None:
    """Upload-Defer-Length other than "1" -> 4xx ERR_, nothing created."""
    before = tus.snapshot()
    response = tus.create(headers={"Upload-Defer-Length": value.encode()})
    assert_4xx_err(response)
    unchanged(tus, before)


# ---------------------------------------------------------------------------------------------
# metadata and concat headers


@pytest.mark.parametrize(
    "value",
    [
        "k !!!",
        "k YQ",
        "k YQ===",
        "k Y_-=",
        "a YQ==,a Yg==",
        "a YQ==,,b Yg==",
        ",",
        "a b c",
    ],
    ids=[
        "bad-base64",
        "missing-padding",
        "extra-padding",
        "urlsafe",
        "duplicate",
        "empty-element",
        "only-comma",
        "three-tokens",
    ],
)
def test_malformed_metadata(tus: TusHTTP, value: str) -> None:
    """Malformed Upload-Metadata -> 4xx ERR_, nothing
    created."""
    before = tus.snapshot()
    response = tus.create(5, metadata=value)
    assert_4xx_err(response)
    unchanged(tus, before)


@pytest.mark.parametrize(
    "template",
    [
        "final;/files/../../etc/passwd",
        "final;/files/%2e%2e/%2e%2e/etc/passwd",
        "final;/files/{A}",
        "final;/files/{a}/../{a}",
        "final;/files/{a}%00",
        "final;/files/{a}0",
        "final;/files/{short}",
        "final;http://evil.example/../files/x",
        "final;../files/{a}",
        "final;/files/{a}" + " /files/x" * 3,
        "partial;/files/{a}",
        "final;/files/ü",
    ],
)
def test_malformed_upload_concat(tus: TusHTTP, template: str) -> None:
    """Hostile partial references -> 4xx ERR_, nothing created."""
    real = upload_id(tus.upload(b"hello", concat="partial"))
    value = template.format(a=real, A=real.upper(), short=real[:31])
    before = tus.snapshot()
    response = tus.create(concat=value.encode())
    assert_4xx_err(response)
    unchanged(tus, before)


# ---------------------------------------------------------------------------------------------
# upload ids in the path


def bad_paths(real: str) -> list[tuple[str, str, bytes]]:
    """(case id, ASGI path as decoded by the server, raw_path as sent)."""
    return [
        ("dotdot", "/files/../etc/passwd", b"/files/../etc/passwd"),
        ("dotdot-bare", "/files/..", b"/files/.."),
        ("dot", "/files/.", b"/files/."),
        ("pct-2e2e", "/files/..", b"/files/%2e%2e"),
        ("pct-2e2e-2f", "/files/../etc/passwd", b"/files/%2e%2e%2fetc%2fpasswd"),
        ("dotdot-pct2f-real", f"/files/../{real}", f"/files/..%2f{real}".encode()),
        ("dotdot-real", f"/files/../files/{real}", f"/files/../files/{real}".encode()),
        ("nul-suffix", f"/files/{real}\x00", f"/files/{real}%00".encode()),
        ("nul-middle", f"/files/{real[:16]}\x00{real[16:]}", f"/files/{real[:16]}%00".encode()),
        ("uppercase", f"/files/{real.upper()}", f"/files/{real.upper()}".encode()),
        ("31-chars", f"/files/{real[:31]}", f"/files/{real[:31]}".encode()),
        ("33-chars", f"/files/{real}0", f"/files/{real}0".encode()),
        ("64-chars", f"/files/{real}{real}", f"/files/{real}{real}".encode()),
        ("unicode", f"/files/{real[:31]}é", f"/files/{real[:31]}%C3%A9".encode()),
        ("fullwidth-digit", f"/files/{real[:31]}\uff10", f"/files/{real[:31]}%EF%BC%90".encode()),
        ("nested", f"/files/{real}/x", f"/files/{real}/x".encode()),
        ("double-slash", "/files//etc/passwd", b"/files//etc/passwd"),
        ("backslash", "/files/..\\..\\etc", b"/files/..%5c..%5cetc"),
        ("space", f"/files/ {real}", f"/files/%20{real}".encode()),
    ]


def call(tus: TusHTTP, method: str, path: str, raw_path: bytes) -> RawResponse:
    if method == "PATCH":
        return tus.raw(
            method,
            path,
            raw_path=raw_path,
            headers={"Content-Type": OFFSET_OCTET, "Upload-Offset": "0"},
            body=b"abc",
        )
    return tus.raw(method, path, raw_path=raw_path)


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_hostile_upload_ids(tus: TusHTTP, method: str) -> None:
    """Traversal, NUL, case, length and unicode
    variants of a real id -> 4xx with Tus-Resumable (ERR_ body unless HEAD); nothing changes
    and the real upload is intact."""
    url = tus.new(10)
    real = upload_id(url)
    before = tus.snapshot()
    failures = []
    for case, path, raw_path in bad_paths(real):
        response = call(tus, method, path, raw_path)
        ok = 400 <= response.status < 500 and response.header("tus-resumable") == "1.0.0"
        if method != "HEAD":
            ok = ok and bool(ERROR_BODY_RE.match(response.body.decode("latin-1")))
        else:
            ok = ok and response.body == b""
        if not ok:
            failures.append((case, response.status, response.body[:120]))
    assert not failures, failures
    unchanged(tus, before)
    assert tus.offset(url) == 0


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE", "GET"])
def test_data_dir_file_names_are_not_ids(tus: TusHTTP, method: str) -> None:
    """The names of the server's own files (state, data, locks) are never served
    as upload ids, whatever the storage layout."""
    url = tus.new(10)
    tus.append(url, 0, b"abc")
    real = upload_id(url)
    names = set()
    for rel in tus.snapshot():
        names.add(rel)
        names.add(rel.rsplit("/", 1)[-1])
    names.discard(real)
    before = tus.snapshot()
    failures = []
    for name in sorted(names):
        path = f"/files/{name}"
        response = call(tus, method, path, path.encode())
        if not 400 <= response.status < 500:
            failures.append((name, response.status, response.body[:120]))
    assert not failures, failures
    unchanged(tus, before)
    assert tus.offset(url) == 3


# ---------------------------------------------------------------------------------------------
# oversized bodies and lengths


def test_oversized_patch_body(tus: TusHTTP) -> None:
    """Content-Length past the upload length -> 413, nothing written."""
    url = tus.new(10)
    before = tus.snapshot()
    response = tus.patch(url, 0, b"x" * 1_000_000)
    assert_4xx_err(response)
    assert response.status_code == 413
    unchanged(tus, before)


def test_oversized_creation_body(tus: TusHTTP) -> None:
    """A creation body longer than Upload-Length -> 413, nothing created."""
    before = tus.snapshot()
    response = tus.create(10, body=b"x" * 1_000_000)
    assert_4xx_err(response)
    assert response.status_code == 413
    unchanged(tus, before)


@pytest.mark.parametrize("length", [1001, 2**40, 2**63 - 1])
def test_length_over_max_size(make_client: MakeClient, length: int) -> None:
    """Upload-Length over Tus-Max-Size -> 413, nothing created."""
    tus = make_client(max_size=1000)
    before = tus.snapshot()
    response = tus.create(length)
    assert_4xx_err(response)
    assert response.status_code == 413
    unchanged(tus, before)


def test_creation_body_over_max_size_deferred(make_client: MakeClient) -> None:
    """A deferred creation whose body alone exceeds Tus-Max-Size -> 413."""
    tus = make_client(max_size=1000)
    response = tus.create(defer=True, body=b"x" * 5000)
    assert_4xx_err(response)
    assert response.status_code == 413


def test_nested_path_under_base(tus: TusHTTP) -> None:
    """A request under the base path that names nothing still gets a tus error."""
    url = tus.new(5)
    response = tus.request("HEAD", f"{upload_path(url)}/extra")
    assert 400 <= response.status_code < 500, describe(response)
