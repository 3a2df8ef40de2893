"""End-to-end fixtures: the real ``tusserver serve`` in a subprocess on loopback.

The server runs exactly as a user starts it (console entry point, argv, ``TUS_*`` environment),
so these tests also cover the CLI, settings parsing, uvicorn and process lifecycle. Its output
goes to a log file that is attached to the report of any failing test.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.netutil import free_port

HOST = "127.0.0.1"
# TUSSERVER_TEST_WORKERS=2 runs every server these fixtures start as `serve --workers 2`
# (a test's own TUS_WORKERS wins): the suites then check any worker serves any request.
TEST_WORKERS_ENV = "TUSSERVER_TEST_WORKERS"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# Same entry point as the `tusserver` console script, but through this interpreter, so it
# works whichever venv (or none) pytest runs from.
_ENTRY = "import sys; from tusserver.cli import main; sys.argv[0] = 'tusserver'; sys.exit(main())"

_servers_key = pytest.StashKey[list["TusServer"]]()


@dataclass
class TusServer:
    """One server instance; ``start``/``kill``/``restart`` keep the same port and data dir."""

    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _logs: list[Path] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        """Served by several worker processes (``serve --workers``)."""
        return self.env.get("TUS_WORKERS", "1") != "1"

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The creation endpoint, e.g. ``http://127.0.0.1:PORT/files/``."""
        return f"{self.origin}/files/"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = self.log_path.with_name(f"{self.log_path.stem}-{self.starts}.log")
        self._logs.append(log)
        argv = [sys.executable, "-c", _ENTRY, "serve", "--host", HOST, "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Its own process group, so kill() reaches the workers too.
                start_new_session=self.multi,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        failed = wait_answering(self.proc, self.base_url, below=500, timeout=START_TIMEOUT)
        if failed is None:
            return
        if self.proc.poll() is None:
            self.stop()
        raise RuntimeError(f"server {failed} during startup\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing; what survives is what was durable.
        With workers, the whole server: the supervisor and every worker."""
        assert self.proc is not None
        if self.multi:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        parts = []
        for log in self._logs:
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            parts.append(f"--- {log.name} ---\n{text}")
        return "\n".join(parts)


@pytest.fixture
def server_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., TusServer]]:
    """Start servers with extra ``TUS_*`` settings: ``server_factory(TUS_MAX_SIZE="10")``."""
    started: list[TusServer] = []
    request.node.stash[_servers_key] = started

    def make(**settings: str) -> TusServer:
        # A developer's own TUS_* variables must not change what the test runs against.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
        if os.environ.get(TEST_WORKERS_ENV):
            env["TUS_WORKERS"] = os.environ[TEST_WORKERS_ENV]
        env.update(settings)
        env["PYTHONUNBUFFERED"] = "1"
        n = len(started) + 1
        server = TusServer(
            port=free_port(),
            data_dir=tmp_path / f"data{n}",
            log_path=tmp_path / f"server{n}.log",
            env=env,
        )
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def tus_server(server_factory: Callable[..., TusServer]) -> TusServer:
    """A server with default settings."""
    return server_factory()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for server in item.stash.get(_servers_key, []):
            report.sections.append((f"tusserver log (port {server.port})", server.logs()))
    return report


# ---- small HTTP helpers, stdlib only, so a client library cannot hide what was sent ---------


def wait_answering(
    proc: subprocess.Popen[bytes], url: str, *, below: int, timeout: float
) -> str | None:
    """Poll ``OPTIONS url`` until it answers with a status under ``below`` (an endpoint
    answers only once the app, not just the socket, is up): None, or why it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        with contextlib.suppress(OSError):
            if request("OPTIONS", url, timeout=1.0)[0] < below:
                return None
        time.sleep(0.05)
    return f"did not answer within {timeout:g}s"


def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; header names come back lower-cased."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout)
    try:
        hdrs = {"Tus-Resumable": "1.0.0", **(headers or {})}
        conn.request(method, parts.path or "/", body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def create_upload(base_url: str, length: int) -> str:
    """POST a new upload of ``length`` bytes; returns its absolute URL."""
    status, headers, body = request("POST", base_url, {"Upload-Length": str(length)})
    assert status == 201, (status, body)
    location = headers["location"]
    assert location.startswith("http://"), f"Location is not absolute: {location}"
    return location


def head_offset(url: str) -> int:
    status, headers, body = request("HEAD", url)
    assert status == 200, (status, headers, body)
    return int(headers["upload-offset"])


def download_sha256(url: str, timeout: float = 30.0) -> tuple[int, str]:
    """GET the upload's bytes, streamed; returns (size, sha256 hex)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path, headers={"Tus-Resumable": "1.0.0"})
        resp = conn.getresponse()
        # 204 is the tusd answer for an empty upload.
        assert resp.status in (200, 204), (resp.status, resp.read()[:500])
        digest = hashlib.sha256()
        size = 0
        while block := resp.read(1 << 20):
            digest.update(block)
            size += len(block)
        return size, digest.hexdigest()
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def distributed_env(moto_endpoint: str, redis_url: str, **extra: str) -> dict[str, str]:
    """``TUS_*`` settings for an instance on moto's S3 (a fresh bucket) and a real Redis (a
    prefix of its own), as behind a load balancer; instances given the same dict share both."""
    import boto3

    from tests.services_s3 import CREDENTIALS, REGION

    bucket = f"tus-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION, **CREDENTIALS).create_bucket(
        Bucket=bucket
    )
    return {
        "TUS_STORAGE": "s3",
        "TUS_S3_BUCKET": bucket,
        "TUS_S3_ENDPOINT_URL": moto_endpoint,
        "TUS_S3_PART_SIZE": str(5 * 1024 * 1024),
        "TUS_MAX_SIZE": str(1024 * 1024 * 1024),
        "TUS_STATE": "redis",
        "TUS_REDIS_URL": redis_url,
        "TUS_REDIS_PREFIX": f"tus-{bucket}:",
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        **extra,
    }
