"""SIGTERM with a PATCH in flight: the PATCH stores what arrived and answers at once (503,
retry), the process exits in bounded time, and after a restart every byte the server received
is there; tuspy then finishes the upload with exact bytes."""

from __future__ import annotations

import os
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest

from .conftest import HOST, TusServer, create_upload, download_sha256, head_offset, sha256
from .test_tuspy import uploader_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]
MiB = 1024 * 1024


def read_response(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_sigterm_answers_an_in_flight_patch_and_keeps_its_bytes(tus_server: TusServer) -> None:
    data = os.urandom(8 * MiB)
    url = create_upload(tus_server.base_url, len(data))
    sent = 3 * MiB
    with socket.create_connection((HOST, tus_server.port), timeout=10) as sock:
        head = (
            f"PATCH {urlsplit(url).path} HTTP/1.1\r\n"
            f"Host: {HOST}:{tus_server.port}\r\n"
            "Tus-Resumable: 1.0.0\r\n"
            "Upload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        sock.sendall(head.encode("ascii") + data[:sent])
        time.sleep(0.5)  # the server has read (and written) these bytes; the body stalls
        assert tus_server.proc is not None
        started = time.monotonic()
        tus_server.proc.send_signal(signal.SIGTERM)
        response = read_response(sock, timeout=5)
        answered = time.monotonic() - started
    status_line = response.split(b"\r\n", 1)[0]
    assert b" 503 " in status_line, response[:300]
    assert b"ERR_SHUTTING_DOWN" in response or b"retry-after" in response.lower()
    assert answered < 3, answered
    tus_server.proc.wait(15)  # exits by itself, well within the graceful timeout
    assert time.monotonic() - started < 12

    tus_server.start()
    assert head_offset(url) == sent  # every byte that reached the server was kept
    uploader_for(tus_server, data, url=url).upload()
    assert download_sha256(url) == (len(data), sha256(data))


def test_sigterm_on_an_idle_server_exits_promptly(tus_server: TusServer) -> None:
    assert tus_server.proc is not None
    started = time.monotonic()
    tus_server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once shut down cleanly, so the exit status says SIGTERM.
    assert tus_server.proc.wait(10) in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
