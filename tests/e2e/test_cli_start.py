"""What a person sees when starting the server: the version, and a "listening" line that is
only printed once the socket is really bound (never before a bind that then fails)."""

from __future__ import annotations

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
