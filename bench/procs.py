"""Processes the benchmarks start, and what they cost: CPU seconds and peak RSS from /proc.

Owns ``Proc`` (a started server: readiness probe, stop, log tail) and ``Meter`` (CPU seconds of
a process and its descendants; peak RSS as the sum of their ``VmHWM``, reset before each
measured run through ``/proc/<pid>/clear_refs``). Linux only, like the servers it measures.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


class Meter:
    """CPU seconds and peak RSS of one process tree (a server and any children it runs)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)

    def _tree(self) -> Iterator[int]:
        for pid in self.pids:
            yield from descendants(pid)

    def cpu_seconds(self) -> float:
        """user + system time of the tree, reaped children included (cutime, cstime)."""
        ticks = 0
        for pid in self._tree():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = _stat_fields(pid)
                # After the command: state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14
                ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
        return ticks / _TICKS

    def reset_peak(self) -> None:
        """Make VmHWM start again from the current RSS (writing 5 to clear_refs)."""
        for pid in self._tree():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def peak_rss(self) -> int:
        """Bytes: the sum of the tree's peak resident sets since the last ``reset_peak``."""
        total = 0
        for pid in self._tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total

    def settle(self, quiet: float = 0.3, idle_cpu: float = 0.01, timeout: float = 15.0) -> float:
        """Wait until the tree is idle (background work a run caused is over); CPU seconds."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.cpu_seconds()
            if now - last < idle_cpu:
                return now
            last = now
        return last


class Proc:
    """A server process started by the benchmark; its output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.meter = Meter([self.popen.pid])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_http(self, port: int, path: str = "/files/", timeout: float = 60.0) -> None:
        """Until an OPTIONS on ``path`` answers (any status): the server is serving."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("OPTIONS", path, headers={"Tus-Resumable": "1.0.0"})
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
