"""Which worker process serves a connection: read from Linux's /proc, nothing in the server.

A test pins a request to a worker by keeping a connection open: the kernel hands each new
connection to one worker, and that worker serves every request on it. ``owner`` finds it by
the server-side socket's inode (``/proc/net/tcp``) among the workers' descriptors.
"""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

from tests.e2e.conftest import HOST, TusServer

_PROC = Path("/proc")


def worker_pids(server: TusServer) -> list[int]:
    """The live workers of ``server`` (its spawned children; not multiprocessing's tracker)."""
    assert server.proc is not None
    parent = server.proc.pid
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # Field 4 of stat, after the parenthesised command name, is the parent's pid.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline and stat.split()[2] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def wait_workers(server: TusServer, count: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(server)
        if len(pids) == count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, found {worker_pids(server)}")


def _socket_inode(server_port: int, client_port: int) -> str | None:
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return inode
    return None


def owner(server: TusServer, conn: http.client.HTTPConnection) -> int | None:
    """The pid of the worker serving ``conn`` (which must have had a response already)."""
    assert conn.sock is not None
    inode = _socket_inode(server.port, conn.sock.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in worker_pids(server):
        fd_dir = _PROC / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(fd_dir / name) == target:
                    return pid
            except OSError:
                continue
    return None


def pinned(
    server: TusServer, count: int, timeout: float = 20.0
) -> list[http.client.HTTPConnection]:
    """One open keep-alive connection served by each of ``count`` different workers."""
    found: dict[int, http.client.HTTPConnection] = {}
    spare: list[http.client.HTTPConnection] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count:
            assert time.monotonic() < deadline, f"connections reached only {sorted(found)}"
            conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
            conn.request("OPTIONS", "/files/", headers={"Tus-Resumable": "1.0.0"})
            conn.getresponse().read()
            pid = owner(server, conn)
            if pid is None or pid in found:
                spare.append(conn)  # kept open a while: the next one may go elsewhere
            else:
                found[pid] = conn
    finally:
        for conn in spare:
            conn.close()
    return list(found.values())
