"""A client cut off mid-PATCH after N bytes: the server keeps at most N (what arrived, less
what uvicorn had buffered when it saw the disconnect), and the upload resumes exactly.

N is 0 (headers only), 1, an S3 part boundary (5 MiB) and the middle of a part, on local
disk and on S3 + Redis; each upload is cut twice (from offset 0, then again from where the
first cut left it) before tuspy finishes it, and the download must hash to the source.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest
from tusclient import client as tus_client

from tests.e2e.conftest import TusServer

from .rawhttp import MiB, assert_stored, cut_off_patch, head, requests_served, wait_served

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]

PART = 5 * MiB  # TUS_S3_PART_SIZE of distributed_env
CUTS = {"0": 0, "1": 1, "part-boundary": PART, "mid-part": PART + PART // 2 + 7}
SIZE = 2 * PART + 4321
# uvicorn drops the body bytes it buffered but had not handed over when it notices a
# disconnect (at most its 64 KiB flow-control window): the server keeps N minus at most that.
SLACK = 128 * 1024


def cut_and_check(server: TusServer, url: str, data: bytes, offset: int, cut: int) -> int:
    """Cut a PATCH from ``offset`` after ``cut`` bytes; returns the offset the server kept."""
    served = _patches(server)
    cut_off_patch(url, offset, data[offset:], cut)
    # Once the dead PATCH is answered, its bytes are stored and the upload is free: the
    # HEAD below then reads the final offset, not one from before the PATCH ran.
    wait_served(server.origin, "PATCH", served + 1)
    reply = head(url)
    assert reply.status == 200, (reply.status, reply.body)
    kept = int(reply.headers["upload-offset"])
    assert max(offset, offset + cut - SLACK) <= kept <= offset + cut, (offset, cut, kept)
    return kept


def _patches(server: TusServer) -> int:
    return requests_served(server.origin, "PATCH")


def test_cut_off_patches_resume_exactly(
    server_factory: Callable[..., TusServer], backend_env: dict[str, str]
) -> None:
    server = server_factory(**backend_env)
    for name, cut in CUTS.items():
        data = os.urandom(SIZE)
        uploader = tus_client.TusClient(server.base_url).uploader(
            file_stream=io.BytesIO(data), chunk_size=4 * MiB
        )
        url = uploader.create_url()
        kept = cut_and_check(server, url, data, 0, cut)
        # A second cut, from wherever the first one left the upload (a tail object on S3).
        kept = cut_and_check(server, url, data, kept, 1 * MiB + 3)
        resumed = tus_client.TusClient(server.base_url).uploader(
            file_stream=io.BytesIO(data), url=url, chunk_size=4 * MiB
        )
        assert resumed.offset == kept, name
        resumed.upload()
        assert resumed.offset == SIZE, name
        assert_stored(url, data)
