"""Crashes in distributed mode: the server SIGKILLed mid-upload, and Redis restarted (empty)
mid-upload. Whatever the server acknowledged survives; the offset it reports afterwards
never runs ahead of what S3 holds; the upload resumes and hashes exactly to the source.
(SIGKILL on local disk: tests/e2e/test_tuspy.py; FLUSHALL: tests/e2e/test_distributed.py.)
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
from tusclient import client as tus_client

from tests.e2e.conftest import TusServer, create_upload, distributed_env
from tests.netutil import free_port

from .rawhttp import (
    MiB,
    StreamingPatch,
    assert_stored,
    finish_upload,
    head,
    patch_headers,
    request,
    settled_offset,
    start,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.timeout(120)]

PART = 5 * MiB  # TUS_S3_PART_SIZE of distributed_env


def wait_sent(patch: StreamingPatch, at_least: int) -> int:
    deadline = time.monotonic() + 30
    while patch.sent < at_least:
        assert not patch.done.is_set(), f"the PATCH ended early: {patch.reply} {patch.error!r}"
        assert time.monotonic() < deadline, "the PATCH did not get going"
        time.sleep(0.01)
    return patch.sent


def test_sigkill_mid_patch_on_s3_and_redis(
    server_factory: Callable[..., TusServer], moto_s3_endpoint: str, redis_url: str
) -> None:
    # The dead process's Redis lock lapses within TUS_LOCK_TTL (3 s by default): the resumed
    # client's first HEAD waits for it rather than failing.
    server = server_factory(**distributed_env(moto_s3_endpoint, redis_url))
    data = os.urandom(24 * MiB + 99)
    url = create_upload(server.base_url, len(data))
    patch = StreamingPatch(url, 0, data, rate=8 * MiB)
    thread = start(patch)
    sent_at_kill = wait_sent(patch, 13 * MiB)
    server.kill()
    thread.join(10)
    assert sent_at_kill < len(data), "the kill must land mid-body"

    server.start()  # the same port, the same bucket and Redis
    offset = settled_offset(url)
    print(f"sent {sent_at_kill} bytes before SIGKILL; {offset} survived")
    # Mid-stream only whole uploaded parts are durable (a tail object is written when a body
    # ends, and a SIGKILL ends nothing).
    assert offset <= sent_at_kill
    assert offset % PART == 0
    uploader = tus_client.TusClient(server.base_url).uploader(
        file_stream=io.BytesIO(data), url=url, chunk_size=8 * MiB
    )
    assert uploader.offset == offset
    uploader.upload()
    assert_stored(url, data)


class RedisProcess:
    """A redis-server of this test's own (persistence off), restartable on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tus-fault-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    redis = RedisProcess()
    redis.start()
    yield redis
    redis.close()


def test_redis_restarted_mid_upload(
    server_factory: Callable[..., TusServer], moto_s3_endpoint: str, own_redis: RedisProcess
) -> None:
    server = server_factory(**distributed_env(moto_s3_endpoint, own_redis.url))
    data = os.urandom(20 * MiB + 5)
    url = create_upload(server.base_url, len(data))
    first = 7 * MiB  # acknowledged: one 5 MiB part and a 2 MiB tail object
    reply = request("PATCH", url, patch_headers(0, first), data[:first])
    assert reply.status == 204, (reply.status, reply.body)

    patch = StreamingPatch(url, first, data[first:], rate=4 * MiB)
    thread = start(patch)
    wait_sent(patch, 4 * MiB)
    own_redis.kill()
    thread.join(30)
    received = first + patch.sent  # the client streams on until the server answers
    # The PATCH that was streaming when Redis died: a clean 5xx (or the connection dropped).
    if patch.reply is not None:
        assert patch.reply.status == 503, (patch.reply.status, patch.reply.body)
        assert patch.reply.code == "ERR_STORAGE_UNAVAILABLE", patch.reply.body

    # During the outage every request is a clean 503, never an offset.
    for method, headers, body in (
        ("HEAD", {}, None),
        ("PATCH", patch_headers(first, 3), b"abc"),
        ("POST", {"Upload-Length": "10"}, None),
    ):
        during = request(method, url if method != "POST" else server.base_url, headers, body)
        assert during.status == 503, (method, during.status, during.headers, during.body)
        assert "upload-offset" not in during.headers
        if method != "HEAD":
            assert during.code == "ERR_STORAGE_UNAVAILABLE", during.body

    own_redis.start()  # the same port, empty: the state comes back from S3
    offset = settled_offset(url)
    print(f"acknowledged {first}, sent {received}; rebuilt {offset}")
    # Parts uploaded after Redis died are durable bytes of this upload: counted, never more.
    assert first <= offset <= received
    assert head(url).headers["upload-length"] == str(len(data))
    finish_upload(url, data)
    assert_stored(url, data)
