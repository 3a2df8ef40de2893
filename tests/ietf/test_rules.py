"""The pure parts: which protocol a request speaks, the per-version rules and the field
parsers. No server; the wire tests drive the same rules end to end."""

from __future__ import annotations

import base64
import hashlib

import pytest
from starlette.datastructures import Headers

from tusserver import errors
from tusserver.ietf.detect import is_draft_request
from tusserver.ietf.fields import parse_content_digest, parse_sf_offset, upload_limit
from tusserver.ietf.versions import CURRENT, VERSIONS, rules_for


def raw(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]


@pytest.mark.parametrize(
    ("headers", "draft"),
    [
        (raw(Upload_Draft_Interop_Version="8"), True),
        (raw(Upload_Complete="?1"), True),
        (raw(Upload_Incomplete="?0"), True),
        (raw(Content_Type="Application/Partial-Upload; x=1"), True),
        (raw(Content_Type="application/offset+octet-stream"), False),
        (raw(Upload_Offset="0", Upload_Length="3"), False),
        # Tus-Resumable wins, wherever it appears.
        (raw(Tus_Resumable="1.0.0", Upload_Complete="?1"), False),
        (raw(Upload_Draft_Interop_Version="6", Tus_Resumable="1.0.0"), False),
        ([], False),
    ],
)
def test_detection(headers: list[tuple[bytes, bytes]], draft: bool) -> None:
    assert is_draft_request(headers) is draft


@pytest.mark.parametrize("value", ["2", "9", "10", "abc", "", "6, 7", "\xb3", "+5", "1" * 40])
def test_unsupported_interop_versions_are_a_400(value: str) -> None:
    with pytest.raises(errors.UnsupportedInteropVersion) as caught:
        rules_for(Headers({"Upload-Draft-Interop-Version": value}))
    assert caught.value.status == 400


def test_rules_per_version() -> None:
    assert rules_for(Headers({})) is CURRENT
    assert rules_for(Headers({"Upload-Draft-Interop-Version": " 7 "})) is VERSIONS[7]
    three = VERSIONS[3]
    assert three.completion(Headers({"Upload-Incomplete": "?1"})) is False
    assert three.flag(True) == {"Upload-Incomplete": "?0"}
    assert VERSIONS[4].flag(True) == {"Upload-Complete": "?1"}
    assert [v for v, r in VERSIONS.items() if r.append_media_type] == [6, 7, 8]
    assert [v for v, r in VERSIONS.items() if r.append_flag_required] == [7, 8]
    assert [v for v, r in VERSIONS.items() if r.upload_limit] == [6, 7, 8]
    assert VERSIONS[6].max_age_key == "expires"
    assert VERSIONS[7].max_age_key == "max-age"
    assert CURRENT.version_header() == {}
    with pytest.raises(errors.InvalidDraftField):
        VERSIONS[8].completion(Headers({"Upload-Complete": "true"}))


def test_offsets_are_strict_sf_integers() -> None:
    assert parse_sf_offset(" 12 ", "Upload-Offset") == 12
    assert parse_sf_offset(None, "Upload-Offset") is None
    for bad in ("-1", "1.5", "0x1", "", "1" * 16):
        with pytest.raises(errors.InvalidDraftField):
            parse_sf_offset(bad, "Upload-Offset")


def test_upload_limit_is_never_empty() -> None:
    assert upload_limit([]) == "min-size=0"
    assert upload_limit([("max-size", 5), ("max-age", 60)]) == "min-size=0, max-size=5, max-age=60"


def test_content_digest() -> None:
    digest = hashlib.sha256(b"abc").digest()
    b64 = base64.b64encode
    value = f"sha-512=:{b64(bytes(64)).decode()}:, sha-256=:{b64(digest).decode()}:"
    checksum = parse_content_digest(value, ["sha256"])
    assert checksum is not None
    assert (checksum.algorithm, checksum.digest) == ("sha256", digest)
    # Algorithms this server does not compute are ignored, as RFC 9530 allows.
    assert parse_content_digest("sha-512=:AAAA:", ["sha256"]) is None
    assert parse_content_digest(value, ["md5"]) is None
    for bad in ("sha-256=:AAAA:", "sha-256=abc", "sha-256=:!!!!:"):
        with pytest.raises(errors.InvalidDraftField):
            parse_content_digest(bad, ["sha256"])
