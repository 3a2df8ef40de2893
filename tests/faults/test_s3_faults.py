"""S3 answering 500/503 or slowly, through a fault-injecting proxy in front of moto.

Transient errors are retried by botocore (the upload succeeds, bytes exact); persistent ones
reach the client as a clean ``503 ERR_STORAGE_UNAVAILABLE``, after which the offset the
server reports never exceeds what S3 really holds, and the upload resumes exactly; slow
answers (2 s) only slow the upload down.
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tusclient import client as tus_client

from tests.e2e.conftest import TusServer, create_upload

from .rawhttp import (
    MiB,
    Reply,
    StreamingPatch,
    assert_stored,
    head,
    patch_headers,
    request,
    settled_offset,
    start,
)
from .s3rig import Rig

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]

PART = 5 * MiB  # TUS_S3_PART_SIZE of distributed_env


def tus_upload(server: TusServer, data: bytes, *, url: str | None = None) -> str:
    uploader = tus_client.TusClient(server.base_url).uploader(
        file_stream=io.BytesIO(data), url=url, chunk_size=4 * MiB
    )
    uploader.upload()
    return str(uploader.url)


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def assert_unavailable(reply: Reply | None) -> None:
    assert reply is not None
    assert reply.status == 503, (reply.status, reply.body)
    assert reply.code == "ERR_STORAGE_UNAVAILABLE", reply.body
    assert "upload-offset" not in reply.headers


def test_transient_errors_are_retried(rig: Rig) -> None:
    proxy = rig.proxy
    proxy.inject("CreateMultipartUpload", code="SlowDown", times=1)
    proxy.inject("UploadPart", code="SlowDown", times=2)
    proxy.inject("PutObject", code="InternalError", times=1, suffix=".part")  # a tail object
    proxy.inject("ListParts", code="ServiceUnavailable", times=1)
    proxy.inject("CompleteMultipartUpload", code="InternalError", times=2)
    data = os.urandom(2 * PART + 12345)
    url = tus_upload(rig.server, data)
    assert_stored(url, data)
    # Each fault was met and got past (by botocore's retries: the client saw no error).
    assert proxy.count("CreateMultipartUpload", 503) == 1
    assert proxy.count("UploadPart", 503) == 2
    assert proxy.count("PutObject", 500) == 1
    assert proxy.count("ListParts", 503) == 1
    assert proxy.count("CompleteMultipartUpload", 500) == 2


def part_outage(rig: Rig) -> None:
    """UploadPart: the first part goes through, every later one fails until the outage
    ends. The PATCH is a 503; the offset is the part that made it, nothing after it."""
    data = os.urandom(3 * PART + 777)
    url = create_upload(rig.server.base_url, len(data))
    fault = rig.proxy.inject("UploadPart", code="SlowDown", after=1, suffix=upload_id(url))
    patch = StreamingPatch(url, 0, data)
    patch.run()
    assert_unavailable(patch.reply)
    offset = settled_offset(url)
    assert offset <= rig.durable(url)
    assert offset == PART
    rig.proxy.clear(fault)
    assert_stored(tus_upload(rig.server, data, url=url), data)


def tail_outage(rig: Rig) -> None:
    """PutObject of the tail object (a chunk ending mid-part): the PATCH is a 503 and the
    bytes past the last whole part are not counted."""
    data = os.urandom(PART + 3 * MiB)
    url = create_upload(rig.server.base_url, len(data))
    fault = rig.proxy.inject("PutObject", code="InternalError", suffix=upload_id(url) + ".part")
    first = PART + 1 * MiB
    assert_unavailable(request("PATCH", url, patch_headers(0, first), data[:first]))
    offset = settled_offset(url)
    assert offset <= rig.durable(url)
    assert offset == PART
    rig.proxy.clear(fault)
    assert_stored(tus_upload(rig.server, data, url=url), data)


def complete_outage(rig: Rig) -> None:
    """CompleteMultipartUpload: every byte is stored but the last PATCH is a 503. A tus
    client then HEADs, sees offset == length and sends nothing more, so the HEAD must
    finish the upload (once S3 is back), or nothing ever would."""
    data = os.urandom(PART + 2 * MiB)
    url = create_upload(rig.server.base_url, len(data))
    fault = rig.proxy.inject("CompleteMultipartUpload", code="InternalError", suffix=upload_id(url))
    assert_unavailable(request("PATCH", url, patch_headers(0, len(data)), data))
    assert rig.durable(url) == len(data)
    rig.proxy.clear(fault)
    # tuspy resuming: HEAD says the offset is the length, so it sends nothing.
    assert_stored(tus_upload(rig.server, data, url=url), data)


def test_persistent_errors_are_a_clean_503(rig: Rig) -> None:
    """Each outage exhausts botocore's retries (5, with exponential backoff: about 15 s),
    so the three run side by side, each on its own upload."""
    with ThreadPoolExecutor(3) as pool:
        runs = [
            pool.submit(scenario, rig) for scenario in (part_outage, tail_outage, complete_outage)
        ]
        for run in runs:
            run.result()
    assert rig.proxy.count("UploadPart", 503) >= 2  # tried again before giving up
    assert rig.proxy.count("PutObject", 500) >= 2
    assert rig.proxy.count("CompleteMultipartUpload", 500) >= 2


def test_slow_s3_still_ends_with_exact_bytes(rig: Rig) -> None:
    proxy = rig.proxy
    for op in ("UploadPart", "PutObject", "ListParts", "CompleteMultipartUpload"):
        proxy.inject(op, delay=2.0, times=1)
    data = os.urandom(2 * PART + 4 * MiB)
    url = create_upload(rig.server.base_url, len(data))
    patch = StreamingPatch(url, 0, data, rate=16 * MiB)
    thread = start(patch)
    # A HEAD while a part upload is held up: answered (the PATCH lets go once its parts
    # in flight are stored, or the HEAD gives up with 423), never with an offset beyond S3's.
    while patch.sent < PART + MiB and not patch.done.is_set():
        time.sleep(0.02)
    during = head(url)
    assert during.status in (200, 423), (during.status, during.body)
    if during.status == 200:
        assert int(during.headers["upload-offset"]) <= rig.durable(url)
    thread.join(60)
    assert patch.reply is not None
    assert patch.reply.status in (204, 423), (patch.reply.status, patch.reply.body)
    assert_stored(tus_upload(rig.server, data, url=url), data)
    assert proxy.count("UploadPart") >= 2
