"""The parent of ``tusserver serve --workers N``: one socket, N workers, kept alive.

It binds the listening socket once (every worker accepts from it: the kernel hands each new
connection to one of them), makes the group's private run directory (the workers' mailbox
sockets and metrics files), upgrades the SQLite catalog once (N workers racing to migrate
would fail), then spawns the workers (``workers.worker``) and watches them:

- a worker that exits is restarted, after a delay that doubles while workers keep dying
  young (up to ``_MAX_DELAY``), so a crash loop cannot spin the CPU;
- a worker that fails to start before any worker ever started means the settings cannot
  work: everything stops and the exit status is 1, as a single server would;
- SIGTERM or SIGINT stops all workers gracefully (each gets one SIGTERM; PATCHes store what
  arrived and answer), and kills those still running ``shutdown_timeout`` + 5 s later.

uvicorn's own multi-process supervisor was not used: it spawns the app from an import
string, and ours is built from ``Settings`` with a protocol class made at runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from tusserver.settings import Settings
from tusserver.state.group import WorkerGroup
from tusserver.workers import worker

log = logging.getLogger("tusserver")

_FIRST_DELAY = 0.5
_MAX_DELAY = 10.0
# A worker that lived this long died of something other than its start: back to _FIRST_DELAY.
_YOUNG = 10.0
_KILL_MARGIN = 5.0
# AF_UNIX socket paths are short (108 bytes): the run dir must not be deep.
_MAX_RUN_DIR = 60
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What signal.signal returned for each signal caught, to put back on the way out.
_Handlers = dict[signal.Signals, Any]


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    delay: float = _FIRST_DELAY


def supervise(settings: Settings) -> int:
    """Run ``settings.worker_count()`` workers until stopped; the process's exit status."""
    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        log.error("startup.failed: cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    run_dir = _make_run_dir()
    try:
        if not _prepare_catalog(settings):
            return 1
        return Supervisor(settings, sock, run_dir).run()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _bind(host: str, port: int) -> socket.socket:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # SO_REUSEADDR (set by create_server), as uvicorn binds: a restart need not wait out
    # TIME_WAIT. The backlog is uvicorn's default.
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _make_run_dir() -> Path:
    base = tempfile.gettempdir()
    if len(base) > _MAX_RUN_DIR:
        base = "/tmp"  # noqa: S108 - a private mkdtemp directory (0700), not a fixed name
    run_dir = Path(tempfile.mkdtemp(prefix="tusserver-", dir=base))
    for sub in ("mailbox", "metrics"):
        (run_dir / sub).mkdir(mode=0o700)
    # Read by prometheus_client when each worker imports it (spawned workers inherit it).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    return run_dir


def _prepare_catalog(settings: Settings) -> bool:
    """Upgrade the catalog schema once, before the workers look at it."""
    if not settings.catalog:
        return True
    from catalog.setup import migrates_on_startup

    if not migrates_on_startup(settings):
        return True  # checked by each worker: the operator runs `tusserver migrate`
    from sqlalchemy.exc import SQLAlchemyError

    from catalog.db import open_engine
    from catalog.migrate import upgrade

    async def run() -> None:
        engine = open_engine(settings.catalog_url())
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        # The class only: a driver message may quote the URL and its password.
        log.error("startup.failed: catalog migration failed: %s", type(exc).__name__)
        return False
    return True


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket, run_dir: Path) -> None:
        self._settings = settings
        self._sock = sock
        self._run_dir = run_dir
        self._slots = [_Slot(i) for i in range(settings.worker_count())]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._ever_ready = False
        self._failed = False
        self._wakeup_read, self._wakeup_write = socket.socketpair()

    def run(self) -> int:
        previous = self._catch_signals()
        try:
            for slot in self._slots:
                self._start(slot)
            log.info("workers.started", extra={"workers": len(self._slots)})
            while not self._stopping:
                self._watch()
            self._stop_all()
        finally:
            self._restore_signals(previous)
            self._wakeup_read.close()
            self._wakeup_write.close()
        return 1 if self._failed else 0

    # -- signals ---------------------------------------------------------------------------

    def _catch_signals(self) -> tuple[int, _Handlers]:
        # Both ends non-blocking: the handler must never block, nor the drain in _watch.
        self._wakeup_write.setblocking(False)
        self._wakeup_read.setblocking(False)
        wakeup = signal.set_wakeup_fd(self._wakeup_write.fileno())
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        return wakeup, handlers

    def _restore_signals(self, previous: tuple[int, _Handlers]) -> None:
        wakeup, handlers = previous
        signal.set_wakeup_fd(wakeup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("shutdown.requested", extra={"signal": sig})
        self._stopping = True

    # -- the workers -----------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        group = WorkerGroup(self._run_dir, slot.index, len(self._slots))
        process = self._context.Process(
            target=worker.run,
            args=(self._settings, self._sock, group, writer),
            name=f"tusserver-worker-{slot.index}",
        )
        process.start()
        writer.close()
        slot.process, slot.ready = process, reader
        slot.started_at, slot.restart_at = time.monotonic(), None
        log.info("worker.started", extra={"worker": slot.index, "pid": process.pid})

    def _watch(self) -> None:
        """Wait for one event (a worker up or gone, a signal, a due restart) and handle it."""
        waitables: list[object] = [self._wakeup_read]
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
            if slot.ready is not None:
                waitables.append(slot.ready)
        wait(waitables, timeout=self._next_timeout())  # type: ignore[arg-type]
        with contextlib.suppress(BlockingIOError):
            self._wakeup_read.recv(512)
        for slot in self._slots:
            self._check(slot)

    def _next_timeout(self) -> float:
        due = [s.restart_at for s in self._slots if s.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else 1.0

    def _check(self, slot: _Slot) -> None:
        if slot.ready is not None and slot.ready.poll():
            with contextlib.suppress(EOFError):
                slot.ready.recv()
                self._ever_ready = True
            slot.ready.close()
            slot.ready = None
        process = slot.process
        if process is not None and not process.is_alive():
            self._reap(slot, process)
        due = slot.restart_at is not None and time.monotonic() >= slot.restart_at
        if due and not self._stopping:
            self._start(slot)

    def _reap(self, slot: _Slot, process: BaseProcess) -> None:
        process.join()
        slot.process = None
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        self._forget(process.pid)
        if self._stopping:
            return
        code = process.exitcode
        log.warning("worker.exited", extra={"worker": slot.index, "pid": process.pid, "code": code})
        if code == worker.STARTUP_FAILURE and not self._ever_ready:
            log.error("startup.failed: a worker could not start; stopping (see its log above)")
            self._failed = self._stopping = True
            return
        lived = time.monotonic() - slot.started_at
        slot.delay = _FIRST_DELAY if lived >= _YOUNG else min(slot.delay * 2, _MAX_DELAY)
        slot.restart_at = time.monotonic() + slot.delay

    def _forget(self, pid: int | None) -> None:
        """What a dead worker leaves in the run dir: its mailbox and its live gauges."""
        if pid is None:
            return
        (self._run_dir / "mailbox" / str(pid)).unlink(missing_ok=True)
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self._run_dir / "metrics"))  # type: ignore[no-untyped-call]

    def _stop_all(self) -> None:
        running = [s.process for s in self._slots if s.process is not None]
        for process in running:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_timeout + _KILL_MARGIN
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker.killed", extra={"pid": process.pid})
                process.kill()
                process.join()
            self._forget(process.pid)
        log.info("workers.stopped")
