"""A real ``redis-server`` for the tests, started once per process on a free loopback port.

Started lazily (only runs that use Redis pay for it) and stopped at exit. Without the binary
the Redis tests skip locally but fail under CI, which installs it (``.ci/run``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from tests.netutil import free_port


class _RedisServer:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def ensure_started(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return self.url
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing (CI installs it in .ci/run)")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="tus-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        self.url = f"redis://127.0.0.1:{port}/0"
                        return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


REDIS = _RedisServer()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS.ensure_started()
