"""``tusserver serve --workers 2``: any worker serves any request of any upload.

Each test pins connections to the two workers (``procs.pinned``: the worker serving a
connection is read from /proc) and drives one upload through both: resuming on the other
worker, a HEAD on one worker releasing a stalled PATCH on the other, a SIGKILLed worker's
upload finished through the other, metrics summed, the sweeper lease shared (and a
separate ``tusserver sweep`` skipping an upload a worker holds), an
``Idempotency-Key`` retry replayed and rate limits counted across workers, and the
supervisor's restart, graceful stop and refusal to loop on workers that cannot start.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.e2e.conftest import _ENTRY, HOST, TusServer, download_sha256
from tests.netutil import free_port
from tests.workers.procs import owner, wait_workers, worker_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KiB = 1024
MiB = 1024 * KiB
TUS = {"Tus-Resumable": "1.0.0"}
Start = Callable[..., TusServer]
Pin = Callable[[TusServer], list[http.client.HTTPConnection]]


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers={**TUS, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def create(conn: http.client.HTTPConnection, length: int) -> str:
    status, headers, body = call(conn, "POST", "/files/", {"Upload-Length": str(length)})
    assert status == 201, (status, body)
    return "/files/" + headers["location"].rsplit("/", 1)[1]


def patch(conn: http.client.HTTPConnection, path: str, offset: int, data: bytes) -> int:
    status, headers, body = call(
        conn,
        "PATCH",
        path,
        {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        data,
    )
    assert status == 204, (status, body)
    return int(headers["upload-offset"])


def head(conn: http.client.HTTPConnection, path: str) -> int:
    status, headers, body = call(conn, "HEAD", path)
    assert status == 200, (status, headers, body)
    return int(headers["upload-offset"])


def start_patch(
    conn: http.client.HTTPConnection, path: str, offset: int, length: int, first: bytes
) -> None:
    """A PATCH that declares ``length`` bytes, sends ``first`` and stalls."""
    conn.putrequest("PATCH", path)
    for name, value in {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(length),
    }.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(first)


def metric(conn: http.client.HTTPConnection, name: str) -> float:
    status, _, body = call(conn, "GET", "/metrics")
    assert status == 200
    found = re.search(rf"^{name} ([0-9.e+]+)$", body.decode(), re.MULTILINE)
    assert found is not None, body.decode()[:2000]
    return float(found.group(1))


def test_an_upload_resumes_on_the_other_worker(workers: Start, pin: Pin) -> None:
    server = workers()
    a, b = pin(server)
    assert owner(server, a) != owner(server, b)
    data = os.urandom(3 * MiB)
    path = create(a, len(data))
    assert patch(a, path, 0, data[:MiB]) == MiB
    assert head(b, path) == MiB
    assert patch(b, path, MiB, data[MiB : 2 * MiB]) == 2 * MiB
    assert head(a, path) == 2 * MiB
    assert patch(a, path, 2 * MiB, data[2 * MiB :]) == len(data)
    url = f"{server.origin}{path}"
    assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())


def test_head_on_one_worker_releases_a_stalled_patch_on_the_other(workers: Start, pin: Pin) -> None:
    server = workers()
    a, b = pin(server)
    data = os.urandom(2 * MiB)
    path = create(a, len(data))
    start_patch(a, path, 0, len(data), data[: 512 * KiB])
    time.sleep(0.5)  # the bytes reach worker A, which then waits for more
    started = time.monotonic()
    offset = head(b, path)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"HEAD took {elapsed:.2f}s: the holder did not let go"
    assert offset == 512 * KiB  # what A had received, stored before it let go
    # A's PATCH ends as in one process: 423, interrupted by the newcomer.
    stalled = a.getresponse()
    assert stalled.status == 423
    assert stalled.read().startswith(b"ERR_UPLOAD_INTERRUPTED")
    assert patch(b, path, offset, data[offset:]) == len(data)
    url = f"{server.origin}{path}"
    assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_killed_workers_upload_finishes_through_the_other(workers: Start, pin: Pin) -> None:
    server = workers()
    a, b = pin(server)
    victim = owner(server, a)
    assert victim is not None
    data = os.urandom(8 * MiB)
    path = create(b, len(data))
    start_patch(a, path, 0, len(data), data[: 3 * MiB])
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    # The kernel dropped the dead worker's lock with it: no lease to wait out.
    started = time.monotonic()
    offset = head(b, path)
    assert time.monotonic() - started < 1.0
    assert 0 <= offset <= 3 * MiB
    assert patch(b, path, offset, data[offset:]) == len(data)
    url = f"{server.origin}{path}"
    assert download_sha256(url) == (len(data), hashlib.sha256(data).hexdigest())
    # The supervisor replaced the dead worker.
    pids = wait_workers(server, 2)
    assert victim not in pids


def test_metrics_are_summed_over_the_workers(workers: Start, pin: Pin) -> None:
    server = workers()
    a, b = pin(server)
    for _ in range(3):
        create(a, 10)
    for _ in range(2):
        create(b, 10)
    path = create(a, 5)
    patch(b, path, 0, b"hello")
    for conn in (a, b):
        assert metric(conn, "tus_uploads_created_total") == 6
        assert metric(conn, "tus_uploads_finished_total") == 1
        assert metric(conn, "tus_bytes_received_total") == 5


def test_one_sweeper_at_a_time_across_the_workers(workers: Start, pin: Pin) -> None:
    server = workers(TUS_SWEEP_INTERVAL="0.2")
    a, b = pin(server)
    # While something else holds the sweeper lease, neither worker sweeps.
    lease = os.open(server.data_dir / ".sweeper.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lease, fcntl.LOCK_EX)
        baseline = metric(a, "tus_sweeps_total")
        time.sleep(1.0)
        assert metric(b, "tus_sweeps_total") == baseline
        assert server.logs().count("another sweeper holds the lease") >= 2
    finally:
        os.close(lease)
    deadline = time.monotonic() + 5
    while metric(a, "tus_sweeps_total") == baseline:
        assert time.monotonic() < deadline, "no worker swept once the lease was free"
        time.sleep(0.1)


def test_sigterm_stops_every_worker(workers: Start) -> None:
    server = workers()
    pids = worker_pids(server)
    assert server.proc is not None
    server.proc.terminate()
    assert server.proc.wait(15) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_retried_creation_on_the_other_worker_replays_the_first(workers: Start, pin: Pin) -> None:
    server = workers()
    a, b = pin(server)
    headers = {"Upload-Length": "10", "Idempotency-Key": "retry-1"}
    status, first, _ = call(a, "POST", "/files/", headers)
    assert status == 201
    status, again, _ = call(b, "POST", "/files/", headers)
    assert status == 201
    assert again["location"] == first["location"]
    assert again["idempotent-replayed"] == "true"
    assert metric(a, "tus_uploads_created_total") == 1


def test_rate_limits_count_every_workers_requests(workers: Start, pin: Pin) -> None:
    server = workers(
        TUS_RATE_LIMIT_CREATIONS_PER_USER="1", TUS_RATE_LIMIT_CREATIONS_PER_USER_BURST="3"
    )
    a, b = pin(server)
    statuses = [call(conn, "POST", "/files/", {"Upload-Length": "1"})[0] for conn in (a, b, a, b)]
    # Three at once for the one anonymous caller, however they are spread over the workers.
    assert statuses == [201, 201, 201, 429]


def test_workers_that_cannot_start_stop_the_server(tmp_path: Path) -> None:
    """Settings that fail every worker's startup (here an unreachable catalog database)
    end the server with status 1, as one process would, instead of a restart loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env.update(
        TUS_WORKERS="2",
        TUS_DATABASE_URL=f"postgresql+asyncpg://tus:tus@{HOST}:{free_port()}/tus",
        TUS_DATA_DIR=str(tmp_path / "data"),
        TUS_PORT=str(free_port()),
    )
    argv = [sys.executable, "-c", _ENTRY, "serve"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=90)
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    assert b"a worker could not start" in done.stderr


def test_sigterm_while_a_worker_still_starts_exits_promptly(
    server_factory: Callable[..., TusServer],
) -> None:
    # server_factory returns once one worker answers: the other may still be importing.
    server = server_factory(TUS_WORKERS="2")
    assert server.proc is not None
    started = time.monotonic()
    server.proc.terminate()
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 5


def test_a_separate_sweep_process_skips_an_upload_a_worker_holds(workers: Start, pin: Pin) -> None:
    server = workers(TUS_EXPIRATION="1", TUS_SWEEP_INTERVAL="3600")
    a, b = pin(server)
    path = create(a, 4 * MiB)
    start_patch(a, path, 0, 4 * MiB, os.urandom(MiB))
    time.sleep(2.0)  # expired by its record, but a worker still streams into it
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env["TUS_EXPIRATION"] = "1"
    argv = [sys.executable, "-c", _ENTRY, "sweep", "--once", "--data-dir", str(server.data_dir)]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout)
    assert report["uploads"]["expired"] == 0
    assert report["uploads"]["skipped_busy"] == 1
    status, _, _ = call(b, "HEAD", path)
    assert status == 200
