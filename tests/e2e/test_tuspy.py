"""tuspy (tusclient 1.1.x) against the real server: plain, chunked, checksummed, resumed and
crash-recovered uploads. Every test ends with a GET whose sha256 must equal the source's."""

from __future__ import annotations

import http.client
import inspect
import io
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from tusclient import client as tus_client
from tusclient.uploader import Uploader

from .conftest import (
    HOST,
    TusServer,
    create_upload,
    download_sha256,
    head_offset,
    request,
    sha256,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MiB = 1024 * 1024


def uploader_for(server: TusServer, data: bytes, **kwargs: object) -> Uploader:
    return tus_client.TusClient(server.base_url).uploader(file_stream=io.BytesIO(data), **kwargs)


def assert_stored(url: str, data: bytes) -> None:
    size, digest = download_sha256(url)
    assert size == len(data)
    assert digest == sha256(data)


def wait_for_stable_offset(url: str, timeout: float = 5.0, *, positive: bool = True) -> int:
    """HEAD until the offset is unchanged across two reads (and positive, if asked).

    After a client vanishes mid-PATCH the server first has to notice, store what arrived and
    release the upload, so the first HEADs may see 0, a lower value, or 423 (lock still held).
    """
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        status, headers, _ = request("HEAD", url)
        if status == 200:
            offset = int(headers["upload-offset"])
            if offset == last and (offset > 0 or not positive):
                return offset
            last = offset
        else:
            assert status == 423, (status, headers)
        time.sleep(0.1)
    pytest.fail(f"offset did not settle within {timeout}s (last seen {last})")


def test_single_patch_8mib(tus_server: TusServer) -> None:
    # tuspy's default chunk_size is sys.maxsize: the whole file goes in one PATCH.
    data = os.urandom(8 * MiB)
    uploader = uploader_for(tus_server, data, metadata={"filename": "eight.bin"})
    uploader.upload()
    assert uploader.offset == len(data)
    assert head_offset(uploader.url) == len(data)
    assert_stored(uploader.url, data)


def test_chunked_3mib(tus_server: TusServer) -> None:
    data = os.urandom(8 * MiB + 17)
    uploader = uploader_for(tus_server, data, chunk_size=3 * MiB)
    offsets = []
    uploader.upload_chunk()  # creates the upload, then sends the first chunk
    offsets.append(uploader.offset)
    while uploader.offset < len(data):
        uploader.upload_chunk()
        offsets.append(uploader.offset)
    assert offsets == [3 * MiB, 6 * MiB, len(data)]
    assert_stored(uploader.url, data)


def test_upload_checksum(tus_server: TusServer) -> None:
    # Sends `Upload-Checksum: sha1 <base64>` with every PATCH.
    data = os.urandom(5 * MiB)
    uploader = uploader_for(tus_server, data, chunk_size=2 * MiB, upload_checksum=True)
    uploader.upload()
    assert uploader.offset == len(data)
    assert_stored(uploader.url, data)


def test_empty_file_needs_no_patch(tus_server: TusServer) -> None:
    uploader = uploader_for(tus_server, b"")
    uploader.upload()  # POST with Upload-Length: 0 and nothing else
    status, headers, _ = request("HEAD", uploader.url)
    assert status == 200
    assert headers["upload-offset"] == "0"
    assert headers["upload-length"] == "0"
    assert_stored(uploader.url, b"")


def test_twenty_concurrent_uploads(tus_server: TusServer) -> None:
    """Uppy runs up to 20 uploads at once; none may be serialised behind another or mix
    bytes with another."""
    blobs = [os.urandom(2 * MiB + i) for i in range(20)]
    urls: list[str | None] = [None] * len(blobs)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            uploader = uploader_for(tus_server, blobs[index], chunk_size=512 * 1024)
            uploader.upload()
            urls[index] = uploader.url
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(blobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(set(urls)) == len(blobs)
    for url, data in zip(urls, blobs, strict=True):
        assert url is not None
        assert_stored(url, data)


def test_deferred_length() -> None:
    # One might expect an `upload-defer-length` option, but tuspy 1.1.0's Uploader has no
    # such option; tus-js-client covers deferred length (test_tus_js_client.py).
    params = inspect.signature(Uploader.__init__).parameters
    if not any("defer" in name for name in params):
        pytest.skip("tuspy 1.1 has no deferred-length option (no upload_length_deferred)")
    pytest.fail("tuspy now supports deferred length: write the real test")


def send_partial_patch(server: TusServer, url: str, data: bytes, sent: int) -> None:
    """Announce all of ``data`` in a PATCH, send ``sent`` bytes of it, then close the socket:
    what a dropped mobile connection looks like to the server."""
    path = urlsplit(url).path
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        head = (
            f"PATCH {path} HTTP/1.1\r\n"
            f"Host: {HOST}:{server.port}\r\n"
            "Tus-Resumable: 1.0.0\r\n"
            "Upload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n"
            "\r\n"
        )
        sock.sendall(head.encode("ascii") + data[:sent])


def test_resume_after_interrupted_patch(tus_server: TusServer) -> None:
    data = os.urandom(4 * MiB)
    url = create_upload(tus_server.base_url, len(data))
    sent = 1 * MiB
    send_partial_patch(tus_server, url, data, sent)

    # The server keeps what arrived (docs/protocol.md, "Interrupted bodies"). uvicorn drops body
    # bytes it had buffered but not yet handed over when it sees the disconnect (at most its 64 KiB
    # flow control window), hence "<= sent" rather than "== sent".
    offset = wait_for_stable_offset(url)
    assert 0 < offset <= sent

    # tuspy resumes from a known URL: it HEADs for the offset itself.
    uploader = uploader_for(tus_server, data, url=url)
    assert uploader.offset == offset
    uploader.upload()
    assert uploader.offset == len(data)
    assert_stored(url, data)


def test_head_right_after_disconnect_keeps_arrived_bytes(tus_server: TusServer) -> None:
    data = os.urandom(2 * MiB)
    url = create_upload(tus_server.base_url, len(data))
    sent = 1 * MiB
    send_partial_patch(tus_server, url, data, sent)
    # Everything sent had reached the server's socket before this HEAD was even sent. The HEAD
    # asks the PATCH to let go; it must first drain what already arrived. Only
    # uvicorn's own buffer at the moment it notices the disconnect (its 64 KiB flow-control
    # window) may be lost: it answers http.disconnect without handing those bytes over.
    offset = wait_for_stable_offset(url, positive=False)
    assert sent - 128 * 1024 <= offset <= sent


@dataclass
class ThrottledPatch:
    """Streams one PATCH of ``data`` from a thread at about ``rate`` bytes/s, until killed."""

    url: str
    data: bytes
    rate: float
    block: int = 256 * 1024
    sent: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.putrequest("PATCH", parts.path, skip_accept_encoding=True)
            for name, value in (
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Offset", "0"),
                ("Content-Type", "application/offset+octet-stream"),
                ("Content-Length", str(len(self.data))),
            ):
                conn.putheader(name, value)
            conn.endheaders()
            start = time.monotonic()
            view = memoryview(self.data)
            while self.sent < len(self.data):
                # Pace by the clock, not by sleeping a fixed step, so slow sends catch up.
                due = start + self.sent / self.rate
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                conn.send(view[self.sent : self.sent + self.block])
                self.sent += min(self.block, len(self.data) - self.sent)
                self.history.append((time.monotonic(), self.sent))
            conn.getresponse().read()
        except OSError as exc:  # the expected end: the server died under us
            self.error = exc
        finally:
            conn.close()


@pytest.mark.timeout(90)
def test_sigkill_mid_patch_keeps_checkpointed_bytes(tus_server: TusServer) -> None:
    """The core promise: bytes the server checkpointed survive a SIGKILL mid-request."""
    data = os.urandom(64 * MiB)
    url = create_upload(tus_server.base_url, len(data))

    patch = ThrottledPatch(url, data, rate=8 * MiB)
    sender = threading.Thread(target=patch.run, daemon=True)
    sender.start()
    # Kill once several checkpoint intervals (~1 s each) have passed inside one request, and
    # well before the body is complete.
    deadline = time.monotonic() + 20
    while patch.sent < 28 * MiB:
        assert sender.is_alive(), f"sender ended early: {patch.error!r}"
        assert time.monotonic() < deadline, "sender too slow"
        time.sleep(0.05)
    sent_at_kill = patch.sent
    tus_server.kill()
    sender.join(10)
    assert not sender.is_alive()
    assert sent_at_kill < len(data), "the kill must land mid-body"

    tus_server.start()  # same port, same data dir
    offset = head_offset(url)
    print(f"sent {sent_at_kill} bytes before SIGKILL; {offset} survived")
    assert 0 < offset <= sent_at_kill, (offset, sent_at_kill)

    # tuspy continues from the recovered offset; a wrong prefix would show in the final hash.
    uploader = uploader_for(tus_server, data, url=url)
    assert uploader.offset == offset
    uploader.upload()
    assert uploader.offset == len(data)
    assert_stored(url, data)
