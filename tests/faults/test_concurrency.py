"""Requests racing for one upload: two PATCHes on the same offset, and 200 HEADs during a long
PATCH, on local disk and on S3 + Redis.

The server's rule (docs/api.md, "Busy uploads"): a request that finds the upload held asks the
holder to stop; the holder stores what already arrived, lets go and answers
``423 ERR_UPLOAD_INTERRUPTED``; the newcomer proceeds. So of two PATCHes at one offset:

* without a checksum, the first (interrupted) keeps the bytes it had received and gets 423;
  the second then finds the offset moved and gets ``409 ERR_MISMATCHED_OFFSET``, having
  written nothing. Neither gets 204; the bytes of exactly one of them are stored, and the
  client resumes from HEAD;
* with ``Upload-Checksum`` a chunk is all or nothing: the first gets 423 and keeps nothing,
  the second wins with 204. Exactly one 204.

Either way the file ends byte-exact.
"""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import TusServer, create_upload

from .rawhttp import (
    MiB,
    Reply,
    StreamingPatch,
    assert_stored,
    finish_upload,
    head,
    request,
    settled_offset,
    start,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]


def metric(origin: str, name: str) -> float:
    reply = request("GET", origin + "/metrics")
    for line in reply.body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_writing(server: TusServer) -> None:
    """Until a PATCH holds an upload and writes (the active-uploads gauge)."""
    deadline = time.monotonic() + 10
    while metric(server.origin, "tus_active_uploads") < 1:
        assert time.monotonic() < deadline, "the first PATCH never started writing"
        time.sleep(0.01)


def race(
    server: TusServer, url: str, data: bytes, extra: dict[str, str]
) -> tuple[StreamingPatch, Reply, Reply]:
    """PATCH A streams slowly and holds the upload; PATCH B arrives at the same offset."""
    hold = threading.Event()
    first = StreamingPatch(url, 0, data, rate=1 * MiB, first=256 * 1024, hold=hold, extra=extra)
    first_thread = start(first)
    assert first.first_sent.wait(10)
    wait_writing(server)
    second = StreamingPatch(url, 0, data, rate=8 * MiB, extra=extra)
    second_thread = start(second)
    hold.set()  # A goes on streaming while B asks for the upload
    first_thread.join(60)
    second_thread.join(60)
    assert first.reply is not None, first.error
    assert second.reply is not None, second.error
    return first, first.reply, second.reply


def test_two_patches_on_one_offset(
    server_factory: Callable[..., TusServer], backend_env: dict[str, str]
) -> None:
    server = server_factory(**backend_env)
    data = os.urandom(3 * MiB + 11)
    url = create_upload(server.base_url, len(data))
    first, interrupted, refused = race(server, url, data, {})
    assert (interrupted.status, interrupted.code) == (423, "ERR_UPLOAD_INTERRUPTED")
    assert (refused.status, refused.code) == (409, "ERR_MISMATCHED_OFFSET")
    # A's bytes, and only A's: nothing of B was written (its bytes are the same here, so
    # the offset is what tells: within what A sent).
    offset = settled_offset(url)
    assert 0 < offset <= first.sent
    finish_upload(url, data)
    assert_stored(url, data)


def test_two_checksummed_patches_on_one_offset_exactly_one_wins(
    server_factory: Callable[..., TusServer], backend_env: dict[str, str]
) -> None:
    server = server_factory(**backend_env)
    data = os.urandom(3 * MiB + 11)
    url = create_upload(server.base_url, len(data))
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    _, interrupted, won = race(server, url, data, {"Upload-Checksum": f"sha256 {digest}"})
    assert (interrupted.status, interrupted.code) == (423, "ERR_UPLOAD_INTERRUPTED")
    assert won.status == 204, (won.status, won.body)
    assert won.headers["upload-offset"] == str(len(data))
    assert_stored(url, data)


def timed_head(url: str) -> tuple[float, Reply]:
    started = time.monotonic()
    reply = head(url)
    return time.monotonic() - started, reply


class Resumer:
    """A client that PATCHes the rest of ``data`` and, when interrupted (423) or told the
    offset moved (409), HEADs and resumes, until the upload is complete."""

    def __init__(self, url: str, data: bytes, rate: float) -> None:
        self.url = url
        self.data = data
        self.rate = rate
        self.attempts = 0
        self.current: StreamingPatch | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            offset = 0
            while offset < len(self.data):
                self.attempts += 1
                patch = StreamingPatch(self.url, offset, self.data[offset:], rate=self.rate)
                self.current = patch
                patch.run()
                reply = patch.reply
                if reply is not None and reply.status == 204:
                    offset = int(reply.headers["upload-offset"])
                    continue
                assert reply is None or reply.status in (409, 423), (reply.status, reply.body)
                offset = settled_offset(self.url, timeout=30)
        except BaseException as exc:
            self.error = exc

    @property
    def sent(self) -> int:
        return 0 if self.current is None else self.current.sent


def test_200_heads_during_a_long_patch(
    server_factory: Callable[..., TusServer], backend_env: dict[str, str]
) -> None:
    server = server_factory(**backend_env)
    data = os.urandom(8 * MiB + 3)
    url = create_upload(server.base_url, len(data))
    resumer = Resumer(url, data, rate=4 * MiB)
    thread = threading.Thread(target=resumer.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while resumer.sent < 1 * MiB:
        assert resumer.error is None, resumer.error
        assert time.monotonic() < deadline, "the PATCH did not get going"
        time.sleep(0.01)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: timed_head(url), range(200)))
    thread.join(60)
    assert resumer.error is None, resumer.error
    assert not thread.is_alive()

    latencies = sorted(seconds for seconds, _ in results)
    statuses = [reply.status for _, reply in results]
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"200 HEADs: {statuses.count(200)} x 200, {statuses.count(423)} x 423; "
        f"median {statistics.median(latencies):.3f} s, p99 {p99:.3f} s, max {latencies[-1]:.3f} s; "
        f"{resumer.attempts} PATCHes"
    )
    assert set(statuses) <= {200, 423}, statuses
    for _, reply in results:
        if reply.status == 200:
            assert 0 <= int(reply.headers["upload-offset"]) <= len(data)
    assert p99 < 1.0
    assert head(url).headers["upload-offset"] == str(len(data))
    assert_stored(url, data)
