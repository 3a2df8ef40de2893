"""Crash takeover: SIGKILL the instance serving a PATCH; tus-js-client finishes through the other.

Two instances share moto's S3 and a redis-server behind one address: a loopback TCP proxy
that sends every new connection to A while A accepts connections, and to B once A is dead
(what a load balancer's health check does). tus-js-client runs with its default retry
delays (0, 1, 3, 5 s). The dead instance's Redis lock cannot be released by it: the upload
is served by B as soon as the lease lapses (TUS_LOCK_TTL, 3 s), well inside that budget,
and the file arrives whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netutil import free_port
from tests.services_redis import redis_url  # noqa: F401  (fixture)
from tests.services_s3 import moto_s3_endpoint  # noqa: F401  (fixture)

from .conftest import HOST, TusServer, distributed_env
from .test_tus_js_client import JS_DIR, assert_stored, make_file, node  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MiB = 1024 * 1024
_PIECE = 64 * 1024


class FailoverProxy:
    """A TCP relay on its own event loop: each connection goes to the first backend that
    accepts it. Bytes towards the backends are throttled to ``rate`` per second, so a
    PATCH is still streaming when the test kills its instance; ``sent`` counts them."""

    def __init__(self, backends: list[int], rate: float) -> None:
        self.port = free_port()
        self.sent = 0
        self.connections: list[tuple[float, int]] = []  # (time.time(), backend port)
        self._backends = backends
        self._rate = rate
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/files/"

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, HOST, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, throttle=True)),
            asyncio.create_task(self._pump(up_reader, writer, throttle=False)),
        ]
        # When either side ends (the backend died, the client went), both are closed: the
        # client sees its request fail, as behind a real balancer.
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for port in self._backends:
            try:
                upstream = await asyncio.open_connection(HOST, port)
            except OSError:
                continue
            self.connections.append((time.time(), port))
            return upstream
        return None

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, throttle: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_PIECE):
                writer.write(data)
                await writer.drain()
                if throttle:
                    self.sent += len(data)
                    await asyncio.sleep(len(data) / self._rate)

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def two_instances(
    server_factory: Callable[..., TusServer],
    moto_s3_endpoint: str,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> tuple[TusServer, TusServer]:
    # Shipped defaults for the lease and the lock wait: this is what users get.
    env = distributed_env(moto_s3_endpoint, redis_url)
    return server_factory(**env), server_factory(**env)


@pytest.fixture
def proxy(two_instances: tuple[TusServer, TusServer]) -> Iterator[FailoverProxy]:
    a, b = two_instances
    relay = FailoverProxy([a.port, b.port], rate=4 * MiB)
    yield relay
    relay.close()


def start_js_upload(node: str, path: Path, **options: Any) -> subprocess.Popen[str]:  # noqa: F811
    return subprocess.Popen(
        [node, str(JS_DIR / "upload.mjs"), str(path), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_patch_resumes_on_the_other_instance(
    node: str,  # noqa: F811
    two_instances: tuple[TusServer, TusServer],
    proxy: FailoverProxy,
    tmp_path: Path,
) -> None:
    a, b = two_instances
    path, data = make_file(tmp_path, 24 * MiB + 777)
    # Default retryDelays: none given. One PATCH with the whole file (default chunkSize).
    client = start_js_upload(node, path, endpoint=proxy.base_url)
    deadline = time.monotonic() + 30
    while proxy.sent < 12 * MiB:  # A holds the upload and has stored a couple of parts
        assert client.poll() is None, f"the upload ended early: {client.communicate()}"
        assert time.monotonic() < deadline, "the PATCH did not get going"
        time.sleep(0.01)
    a.kill()
    killed = time.time()
    try:
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, f"tus-js-client gave up:\n{err}"
    result = json.loads(out)
    assert_stored(b.base_url + result["url"].rsplit("/", 1)[1], data)

    exchanges = result["exchanges"]
    # The PATCH cut by the kill got no answer; the client then resumed with HEADs. The first
    # normally waits out the lease on B and answers 200; on a loaded machine it may answer
    # 423 first, which the client retries.
    assert [x["method"] for x in exchanges][:2] == ["POST", "HEAD"], exchanges
    heads = [x for x in exchanges[1:] if x["method"] == "HEAD"]
    resumed = next(x for x in heads if x["status"] == 200)
    assert all(x["status"] == 423 for x in heads[: heads.index(resumed)]), heads
    takeover = resumed["at"] / 1000 - killed
    print(f"takeover: HEAD answered 200 by B {takeover:.2f} s after SIGKILL ({len(heads)} HEAD)")
    assert 0 < int(resumed["offset"]) < len(data)
    assert takeover < 4.5, f"B took {takeover:.2f} s to serve the upload"
    after_kill = [port for at, port in proxy.connections if at >= killed]
    assert after_kill, "no request after the kill"
    assert set(after_kill) == {b.port}
