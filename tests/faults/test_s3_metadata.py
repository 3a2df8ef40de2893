"""tus metadata on S3: what the server sends as object metadata stays inside what S3 takes,
and S3 refusing a creation is a clear 4xx/503, never a 500.

moto does not enforce S3's 2 KiB user-metadata rule nor its 8 KiB header limit (only Python's
http.server's 100 header lines, with a 431), so the requests are checked where they pass: the
proxy in front of moto records every request's header lines.
"""

from __future__ import annotations

import base64

import pytest

from .rawhttp import MiB, patch_headers, request
from .s3rig import Rig

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]

# S3's documented limits: user metadata (keys without the x-amz-meta- prefix, plus values)
# and the whole request header section.
S3_METADATA_LIMIT = 2 * 1024
S3_HEADER_LIMIT = 8 * 1024


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def many_keys(count: int) -> str:
    """``filename``, ``filetype`` and ``count`` more pairs (thousands fit TUS_MAX_METADATA_SIZE)."""
    pairs = [f"filename {b64('clip.mp4')}", f"filetype {b64('video/mp4')}"]
    pairs += [f"k{i} {b64(str(i))}" for i in range(count)]
    return ",".join(pairs)


def assert_within_s3_limits(heads: list[tuple[str, list[str]]]) -> int:
    """Every request carrying object metadata is one S3 takes; returns how many did."""
    carrying = 0
    for op, lines in heads:
        meta = [line.partition(":") for line in lines if line.lower().startswith("x-amz-meta-")]
        if not meta:
            continue
        carrying += 1
        user = sum(
            len(name.strip()) - len("x-amz-meta-") + len(value.strip()) for name, _, value in meta
        )
        assert user <= S3_METADATA_LIMIT, (op, user)
        assert sum(len(line) + 2 for line in lines) <= S3_HEADER_LIMIT, op
        assert len(lines) < 100, (op, len(lines))
    return carrying


@pytest.mark.parametrize(
    "pieces",
    [[11], [5, 6], [6 * MiB]],
    ids=["one-part", "small-object-from-tail", "multipart"],
)
def test_thousands_of_metadata_keys_on_s3(rig: Rig, pieces: list[int]) -> None:
    value = many_keys(2000)
    size = sum(pieces)
    created = request(
        "POST", rig.server.base_url, {"Upload-Length": str(size), "Upload-Metadata": value}
    )
    assert created.status == 201, (created.status, created.body[:300])
    url = created.headers["location"]
    offset = 0
    for piece in pieces:
        done = request("PATCH", url, patch_headers(offset, piece), b"x" * piece, timeout=60)
        assert done.status == 204, (done.status, done.body[:300])
        offset += piece
    # The full metadata is the server's to keep and echo, whatever S3 could hold.
    assert request("HEAD", url).headers["upload-metadata"] == value
    # What S3 got: within its limits (the creation, and the object written at the end if
    # the bytes came as a tail), and it says what the object is.
    carrying = assert_within_s3_limits(rig.proxy.heads)
    assert carrying == (2 if pieces == [5, 6] else 1)
    upload_id = url.rsplit("/", 1)[1]
    stored = rig.s3.head_object(Bucket=rig.bucket, Key=upload_id)
    assert stored["Metadata"]["filename"] == "clip.mp4"
    assert stored["ContentType"] == "video/mp4"


@pytest.mark.parametrize(
    ("code", "status", "err"),
    [
        ("MetadataTooLarge", 400, "ERR_METADATA_TOO_LARGE"),
        ("RequestHeaderSectionTooLarge", 400, "ERR_METADATA_TOO_LARGE"),
        ("AccessDenied", 503, "ERR_STORAGE_UNAVAILABLE"),
    ],
)
def test_s3_refusing_a_creation_is_a_clear_error(
    rig: Rig, code: str, status: int, err: str
) -> None:
    fault = rig.proxy.inject("CreateMultipartUpload", code=code, times=1)
    refused = request(
        "POST", rig.server.base_url, {"Upload-Length": "5", "Upload-Metadata": many_keys(10)}
    )
    assert (refused.status, refused.code) == (status, err), refused.body[:300]
    rig.proxy.clear(fault)
    created = request("POST", rig.server.base_url, {"Upload-Length": "5"})
    assert created.status == 201
