"""What a person sees when starting the server: the version, and a "listening" line that is
only printed once the socket is really bound (never before a bind that then fails)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import _ENTRY, HOST, TusServer
from tusserver import __version__

pytestmark = pytest.mark.e2e


def _cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_version_flag_prints_the_package_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"tusserver {__version__}"


def test_listening_is_logged_with_the_bound_address(tus_server: TusServer) -> None:
    logs = tus_server.logs()
    assert f"tusserver listening on http://{HOST}:{tus_server.port}/files/" in logs


def test_a_port_in_use_fails_without_claiming_to_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("serve", "--host", HOST, "--port", str(port), "--data-dir", str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "address already in use" in output
    assert "listening on" not in output


def test_config_prints_sources_and_never_a_secret(tmp_path: Path) -> None:
    secret = "s3cr3t-" + "x" * 40
    env = {
        **os.environ,
        "TUS_JWT_SECRET": secret,
        "TUS_DATABASE_URL": "postgresql+asyncpg://app:db-pass-123@db:5432/tus",
        "TUS_EXPIRATION": "3600",
    }
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY, "config", "--port", "9191", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line.split(None, 2)[1:] for line in done.stdout.splitlines()}
    assert lines["TUS_PORT"] == ["option", "9191"]
    assert lines["TUS_EXPIRATION"] == ["environment", "3600"]
    assert lines["TUS_BASE_PATH"] == ["default", "/files/"]
    assert lines["TUS_JWT_SECRET"] == ["environment", "********"]
    assert "postgresql+asyncpg://app:********@db:5432/tus" in done.stdout
    assert secret not in done.stdout
    assert "db-pass-123" not in done.stdout
