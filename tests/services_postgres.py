"""A real PostgreSQL server for the tests: a throwaway cluster, started once per process.

Owns the cluster's whole life: finds ``initdb``/``pg_ctl``/``postgres`` (on ``PATH`` or in
Debian's ``/usr/lib/postgresql/<version>/bin``, highest version first), initdb's a temporary
data directory, starts it on a free loopback port with durability switched off (the data is
thrown away anyway), and stops it and deletes the directory at exit. Started lazily: only
runs that use Postgres pay for it. Postgres refuses to run as root, so under root (CI) the
cluster runs as the Debian ``postgres`` system user, or ``nobody``.

``create_database`` makes a fresh, uniquely named database and returns its SQLAlchemy
``postgresql+asyncpg://`` URL; the ``postgres_url`` (one database per session) and
``fresh_postgres_url`` (a new database per test) fixtures are built on it. Without the
binaries the Postgres tests skip locally but fail under CI, which installs them (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.netutil import free_port

_T = TypeVar("_T")
_TOOLS = ("initdb", "pg_ctl", "postgres")
_START_TIMEOUT = 30


def _is_tool_dir(directory: str) -> bool:
    return all(os.access(os.path.join(directory, tool), os.X_OK) for tool in _TOOLS)


def _version_key(bindir: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); "9.6" -> (9, 6); anything odd sorts last
    name = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (-1,)


def find_bindir() -> str | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    ``PATH`` first (following symlinks, so the sibling tools such as ``pg_isready`` come from
    the same installation), then Debian's versioned directories, which are not on ``PATH``.
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        for directory in (os.path.dirname(os.path.realpath(initdb)), os.path.dirname(initdb)):
            if _is_tool_dir(directory):
                return directory
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for directory in debian:
        if _is_tool_dir(directory):
            return directory
    return None


def _run_in_thread(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion on a new event loop in a new thread.

    Works from sync code and from inside a running loop (an async test or fixture), where
    ``asyncio.run`` on the current thread would be refused.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed back to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="tus-postgres-admin", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class _PostgresServer:
    def __init__(self) -> None:
        self.bindir = ""
        self.topdir = ""
        self.datadir = ""
        self.port = 0
        self.url = ""
        self._user: str | None = None  # the unprivileged user we switch to when root
        self._running = False
        self._lock = threading.Lock()

    # ---- running commands as the cluster's owner -------------------------------------------
    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        runuser = shutil.which("runuser")
        if runuser is not None:
            return [runuser, "-u", self._user, "--", *argv]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            entry = pwd.getpwnam(self._user)
            return [
                setpriv,
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--init-groups",
                "--",
                *argv,
            ]
        raise RuntimeError("running as root but neither runuser nor setpriv is available")

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_owner(argv),
            cwd=self.topdir,  # the owner may not be able to enter the caller's cwd
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _log_tail(self) -> str:
        try:
            lines = Path(self.topdir, "postgres.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-20:])

    # ---- life cycle --------------------------------------------------------------------------
    def ensure_started(self) -> str:
        """Start the cluster if needed; returns ``postgresql://postgres@127.0.0.1:<port>``."""
        with self._lock:
            if self._running:
                return self.url
            bindir = find_bindir()
            if bindir is None:
                if os.environ.get("CI"):
                    pytest.fail("PostgreSQL (initdb/pg_ctl) is missing (CI installs it in .ci/run)")
                pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
            self.bindir = bindir
            self._start()
            return self.url

    def _start(self) -> None:
        if os.geteuid() == 0:
            # postgres refuses to run as root; its own system user if Debian made one.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = pwd.getpwnam("nobody")
            self._user = owner.pw_name
            # /tmp is world-traversable; a $TMPDIR under /root might not be.
            parent = "/tmp" if os.path.isdir("/tmp") else None
            self.topdir = tempfile.mkdtemp(prefix="tus-postgres-", dir=parent)
            os.chown(self.topdir, owner.pw_uid, owner.pw_gid)
        else:
            self.topdir = tempfile.mkdtemp(prefix="tus-postgres-")
        os.chmod(self.topdir, 0o755)
        self.datadir = os.path.join(self.topdir, "data")
        atexit.register(self.stop)

        initdb = self._run(
            [
                os.path.join(self.bindir, "initdb"),
                "-D",
                self.datadir,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                # Byte-order collation (stable, fast), but Unicode case mapping, as production
                # databases have: ILIKE must fold "Ä" to "ä" like the catalog's users expect.
                "--lc-collate=C",
                "--lc-ctype=C.UTF-8",
                "--no-sync",
            ],
            timeout=120,
        )
        if initdb.returncode != 0:
            self.stop()
            raise RuntimeError(
                f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}"
            )

        self.port = free_port()
        socket_dir = self.topdir.replace("'", "''")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{socket_dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        # Appending keeps the file's owner; later lines win over initdb's defaults.
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as conf:
            conf.write("\n# tests/services_postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

        try:
            started = self._run(
                [
                    os.path.join(self.bindir, "pg_ctl"),
                    "start",
                    "-D",
                    self.datadir,
                    "-l",
                    os.path.join(self.topdir, "postgres.log"),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT),
                ],
                timeout=_START_TIMEOUT + 10,
            )
        except subprocess.TimeoutExpired:
            started = None
        self._running = True  # from here on stop() has a server to stop
        if started is None or started.returncode != 0:
            detail = "" if started is None else f"{started.stdout}{started.stderr}"
            log = self._log_tail()
            self.stop()
            raise RuntimeError(
                f"PostgreSQL did not start within {_START_TIMEOUT} s:\n{detail}\n{log}"
            )

        # pg_ctl -w pinged it; make sure the loopback TCP listener is the one answering.
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    log = self._log_tail()
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL is not listening on 127.0.0.1:{self.port}:\n{log}"
                    ) from None
                time.sleep(0.05)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._running:
            self._running = False
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                pg_ctl = os.path.join(self.bindir, "pg_ctl")
                self._run(
                    [pg_ctl, "stop", "-D", self.datadir, "-m", "immediate", "-w", "-t", "10"],
                    timeout=20,
                )
        if self.topdir:
            shutil.rmtree(self.topdir, ignore_errors=True)
            self.topdir = ""


POSTGRES = _PostgresServer()


async def _admin(statement: str) -> None:
    import asyncpg

    base = POSTGRES.ensure_started()
    conn = await asyncpg.connect(f"{base}/postgres", ssl=False, timeout=_START_TIMEOUT)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(name_prefix: str = "tus") -> str:
    """Create a new, empty, uniquely named database; returns its SQLAlchemy asyncpg URL.

    Synchronous, and safe to call from inside a running event loop.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", name_prefix):
        raise ValueError(
            f"database name prefix must be a short lowercase identifier: {name_prefix!r}"
        )
    POSTGRES.ensure_started()  # skip/fail here, on the caller's thread, not in the helper thread
    name = f"{name_prefix}_{uuid.uuid4().hex[:12]}"
    _run_in_thread(_admin(f'CREATE DATABASE "{name}"'))
    return f"postgresql+asyncpg://postgres@127.0.0.1:{POSTGRES.port}/{name}"


def drop_database(url: str) -> None:
    """Drop a database made by ``create_database``, disconnecting whoever is still on it."""
    name = url.rsplit("/", 1)[1]
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a database made by create_database: {url!r}")
    _run_in_thread(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A database shared by the whole session (SQLAlchemy ``postgresql+asyncpg://`` URL)."""
    return create_database("tus")


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A brand-new empty database for one test (SQLAlchemy ``postgresql+asyncpg://`` URL)."""
    url = create_database("tus_test")
    yield url
    drop_database(url)
