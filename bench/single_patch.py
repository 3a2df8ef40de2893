"""One large upload in a single PATCH: throughput, server CPU and peak RSS, against the limit.

Starts ``tusserver serve`` on loopback with a throwaway data directory, streams N bytes in one
PATCH (the way tuspy uploads by default), and reads the server's CPU time and peak RSS from
/proc. The same bytes sent to a bare socket sink on loopback give the machine's ceiling, and
(local storage) the same bytes written and fdatasync'ed into the data directory by
``bench.durable`` give the disk's: what a server that syncs before it answers can reach.
Usage: ``python -m bench.single_patch [--size-mib 1024] [--runs 2] [--chunk-mib N]
[--data-dir DIR] [--env TUS_STORAGE=s3 --env TUS_S3_BUCKET=... ...]``; ``--chunk-mib`` sends
the upload as several PATCHes of that size instead of one, and each ``--env`` is passed to
the server (how the S3/Redis backends are measured against running services).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

BLOCK = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def payload(size: int) -> Iterator[bytes]:
    block = os.urandom(BLOCK)
    sent = 0
    while sent < size:
        piece = block[: min(BLOCK, size - sent)]
        sent += len(piece)
        yield piece


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cpu, peak


def wait_ready(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("OPTIONS", "/files/")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def upload_once(port: int, size: int, chunk: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600, blocksize=BLOCK)
    conn.request("POST", "/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size)})
    created = conn.getresponse()
    created.read()
    location = created.getheader("Location")
    assert created.status == 201, created.status
    assert location
    path = "/" + location.split("/", 3)[3]
    started = time.perf_counter()
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        conn.request(
            "PATCH",
            path,
            body=payload(length),
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(length),
            },
        )
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 204, reply.status
        offset += length
        assert reply.getheader("Upload-Offset") == str(offset)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def sink_once(size: int) -> float:
    """The same bytes into a socket that discards them: loopback's ceiling here."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def drain() -> None:
        conn, _ = listener.accept()
        with conn:
            remaining = size
            while remaining > 0:
                data = conn.recv(BLOCK)
                if not data:
                    break
                remaining -= len(data)
            conn.sendall(b"ok")

    thread = threading.Thread(target=drain)
    thread.start()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for piece in payload(size):
            sock.sendall(piece)
        sock.recv(2)
    elapsed = time.perf_counter() - started
    thread.join()
    listener.close()
    return elapsed


def durable_once(data_dir: Path, size: int, chunk: int) -> tuple[float, float, int]:
    """The same upload written and synced by bench.durable in ``data_dir``'s filesystem:
    (seconds, CPU seconds, peak RSS bytes)."""
    target = Path(tempfile.mkdtemp(prefix="durable-", dir=data_dir))
    try:
        argv = [sys.executable, "-m", "bench.durable", "--dir", str(target), "--uploads", "1"]
        argv += ["--size", str(size), "--chunk", str(chunk)]
        done = subprocess.run(argv, capture_output=True, check=True, cwd=ROOT)
        raw = json.loads(done.stdout)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return raw["wall"], raw["cpu"], raw["peak_rss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--chunk-mib", type=int, help="PATCH size (default: one PATCH)")
    parser.add_argument("--data-dir", help="where the server stores bytes (default: a temp dir)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    size = args.size_mib * BLOCK
    chunk = args.chunk_mib * BLOCK if args.chunk_mib else size
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in args.env)
    backend = env.get("TUS_STORAGE", "local")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="tusbench-"))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tusserver.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    rows = []
    try:
        wait_ready(port)
        for run in range(1, args.runs + 1):
            cpu_before, _ = proc_stats(server.pid)
            elapsed = upload_once(port, size, chunk)
            cpu_after, peak = proc_stats(server.pid)
            rows.append((f"tusserver {backend}, run {run}", elapsed, cpu_after - cpu_before, peak))
            local_files = list(data_dir.glob("*.bin"))
            # Guard against measuring the wrong backend (local bytes when S3 was asked for).
            assert bool(local_files) == (backend == "local"), (backend, local_files)
            for leftover in local_files:
                leftover.unlink()
        if backend == "local":
            rows.append(("durable write (limit)", *durable_once(data_dir, size, chunk)))
        rows.append(("loopback socket sink (limit)", sink_once(size), None, None))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    limit = rows[-1][1]
    disk = next((elapsed for name, elapsed, _, _ in rows if name.startswith("durable")), None)
    shape = f"PATCHes of {args.chunk_mib} MiB" if args.chunk_mib else "a single PATCH"
    print(f"\n1 x {args.size_mib} MiB in {shape}, storage {backend}")
    print(
        f"| {'scenario':<30} | {'MB/s':>7} | {'s':>6} | {'server CPU s':>12} | "
        f"{'peak RSS MiB':>12} | {'of limit':>8} | {'of disk':>7} |"
    )
    print(f"|{'-' * 32}|{'-' * 9}|{'-' * 8}|{'-' * 14}|{'-' * 14}|{'-' * 10}|{'-' * 9}|")
    for name, elapsed, cpu, peak in rows:
        cpu_text = f"{cpu:.2f}" if cpu is not None else "-"
        peak_text = f"{peak / BLOCK:.0f}" if peak is not None else "-"
        # "of limit": of the loopback sink's speed; "of disk": of the durable writer's.
        of_disk = f"{disk / elapsed:>6.0%}" if disk and not name.startswith("loopback") else "-"
        print(
            f"| {name:<30} | {size / elapsed / 1e6:>7.0f} | {elapsed:>6.2f} | {cpu_text:>12} | "
            f"{peak_text:>12} | {limit / elapsed:>7.0%} | {of_disk:>7} |"
        )


if __name__ == "__main__":
    main()
