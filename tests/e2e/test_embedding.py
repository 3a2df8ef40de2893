"""tusserver mounted inside host applications: examples/{fastapi,starlette,litestar}_host.py.

Each example runs exactly as docs/embedding.md starts it (``uvicorn examples.<name>:app``,
real uvicorn on loopback) and mounts tusserver under ``/uploads``, with the host's own auth
(an ``X-Api-Key``) mapped to our principal, a pre-create function and a post-finish function.
Uploads go through the mount with tuspy and tus-js-client; every URL handed out must carry
the mount prefix, the bytes must come back from a GET, and ownership must follow the host's
users. One server per host for the module: starting one is most of a test's time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tusclient import client as tus_client

from tests.netutil import free_port

from .conftest import HOST, request, sha256, stop_process, wait_answering
from .test_browser import (
    browser,  # noqa: F401 (a fixture)
    download_and_check,
    make_file,
    search_for,
    wait_ready,
)
from .test_tus_js_client import js_upload, node  # noqa: F401 (node is a fixture)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("fastapi", "starlette", "litestar")
PREFIX = "/uploads"
ALICE = {"X-Api-Key": "alice-key"}
BOB = {"X-Api-Key": "bob-key"}


@dataclass(frozen=True)
class Host:
    name: str
    origin: str
    log: Path

    @property
    def endpoint(self) -> str:
        return f"{self.origin}{PREFIX}/files/"

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


@pytest.fixture(scope="module", params=HOSTS)
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Host]:
    name: str = request.param
    home = tmp_path_factory.mktemp(f"host-{name}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), TUS_DATA_DIR=str(home / "data"))
    log = home / "host.log"
    argv = [sys.executable, "-m", "uvicorn", f"examples.{name}_host:app"]
    argv += ["--host", HOST, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    found = Host(name, f"http://{HOST}:{port}", log)
    try:
        _wait_ready(proc, found)
        yield found
    finally:
        stop_process(proc)


def _wait_ready(proc: subprocess.Popen[bytes], host: Host) -> None:
    # OPTIONS on the endpoint answers 2xx only once the host's lifespan opened tusserver's.
    failed = wait_answering(proc, host.endpoint, below=300, timeout=30)
    if failed is not None:
        pytest.fail(f"{host.name} host {failed}:\n{host.logs()}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    host = getattr(item, "funcargs", {}).get("host")
    if report.failed and isinstance(host, Host):
        report.sections.append((f"{host.name} host log", host.logs()))
    return report


def tuspy_upload(host: Host, data: bytes, headers: dict[str, str], filename: str) -> str:
    uploader = tus_client.TusClient(host.endpoint, headers=headers).uploader(
        file_stream=io.BytesIO(data), chunk_size=1024 * 1024, metadata={"filename": filename}
    )
    uploader.upload()
    assert uploader.url is not None
    return str(uploader.url)


def get_as(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    status, _, body = request("GET", url, headers)
    return status, body


def json_call(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    payload = None if body is None else json.dumps(body).encode()
    more = {"Content-Type": "application/json"} if body is not None else {}
    status, _, answer = request(method, url, {**headers, **more}, payload)
    return status, json.loads(answer) if answer else None


def finished_uploads(host: Host, headers: dict[str, str]) -> list[str]:
    status, body = json_call("GET", f"{host.origin}/me/finished", headers)
    assert status == 200, body
    uploads: list[str] = body["uploads"]
    return uploads


def test_tuspy_through_the_mount(host: Host) -> None:
    data = os.urandom(2 * 1024 * 1024 + 11)
    url = tuspy_upload(host, data, ALICE, "report.bin")
    assert url.startswith(host.endpoint), url
    # The bytes, over the host's auth only (no JWT anywhere).
    size, digest = _download(url, ALICE)
    assert (size, digest) == (len(data), sha256(data))
    # pre_create added its metadata; post_finish heard the upload as alice's.
    status, headers, _ = request("HEAD", url, ALICE)
    assert status == 200
    added = base64.b64encode(host.name.encode()).decode()
    assert f"host {added}" in headers["upload-metadata"]
    assert url.rsplit("/", 1)[1] in finished_uploads(host, ALICE)


def test_tus_js_client_through_the_mount(host: Host, node: str, tmp_path: Path) -> None:  # noqa: F811
    data = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    result = js_upload(
        node,
        path,
        endpoint=host.endpoint,
        chunkSize=1024 * 1024,
        headers=ALICE,
        metadata={"filename": "clip.bin"},
    )
    assert result["url"].startswith(host.endpoint), result["url"]
    bad = [x for x in result["exchanges"] if not 200 <= x["status"] < 300]
    assert not bad, bad
    assert _download(result["url"], ALICE) == (len(data), sha256(data))


def test_ownership_follows_the_hosts_users(host: Host) -> None:
    data = b"alice's own bytes"
    url = tuspy_upload(host, data, ALICE, "private.txt")
    # Another user sees a missing upload; nobody at all is refused by the host's auth.
    assert request("HEAD", url, BOB)[0] == 404
    assert get_as(url, BOB)[0] == 404
    assert request("DELETE", url, BOB)[0] == 404
    patch = {**BOB, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert request("PATCH", url, patch, b"x")[0] == 404
    assert request("HEAD", url, {})[0] == 401
    assert request("POST", host.endpoint, {"Upload-Length": "1"})[0] == 401
    assert get_as(url, ALICE) == (200, data)
    upload_id = url.rsplit("/", 1)[1]
    assert upload_id not in finished_uploads(host, BOB)
    status, listed = json_call("GET", f"{host.origin}{PREFIX}/api/v1/files", BOB)
    assert status == 200
    assert upload_id not in [item["id"] for item in listed["items"]]


def test_pre_create_refuses(host: Host) -> None:
    metadata = "filename " + base64.b64encode(b"setup.exe").decode()
    status, _, body = request(
        "POST", host.endpoint, {**ALICE, "Upload-Length": "3", "Upload-Metadata": metadata}
    )
    assert status == 415
    assert b"executables are not accepted" in body


def test_every_url_carries_the_prefix(host: Host) -> None:
    # The REST API's upload URL.
    status, init = json_call(
        "POST",
        f"{host.origin}{PREFIX}/api/v1/uploads/init",
        ALICE,
        {"filename": "notes.txt", "file_size": 5, "content_type": "text/plain"},
    )
    assert status in (200, 201), init
    assert init["upload_url"].startswith(host.endpoint), init
    patch = {**ALICE, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert request("PATCH", init["upload_url"], patch, b"hello")[0] == 204
    file_id = init["upload_url"].rsplit("/", 1)[1]
    # A signed download link, good without the host's key.
    link = _download_link(host, file_id)
    assert link.startswith(f"{host.origin}{PREFIX}/"), link
    assert get_as(link, {}) == (200, b"hello")


def test_demo_page_under_the_mount(host: Host) -> None:
    status, _, page = request("GET", f"{host.origin}{PREFIX}/")
    assert status == 200
    assert f'data-base="{PREFIX}"'.encode() in page
    assert f'data-tus-endpoint="{PREFIX}/files/"'.encode() in page
    assert f'src="{PREFIX}/static/app.js"'.encode() in page
    status, _, script = request("GET", f"{host.origin}{PREFIX}/static/app.js")
    assert status == 200
    assert script == (ROOT / "tusserver" / "web" / "static" / "app.js").read_bytes()


def _download(url: str, headers: dict[str, str]) -> tuple[int, str]:
    status, _, body = request("GET", url, headers, timeout=30)
    assert status == 200, body[:300]
    return len(body), sha256(body)


def _download_link(host: Host, file_id: str) -> str:
    # The catalog records a finished upload right after its last PATCH answers.
    deadline = time.monotonic() + 10
    while True:
        status, body = json_call(
            "POST",
            f"{host.origin}{PREFIX}/api/v1/delivery/download-url",
            ALICE,
            {"file_id": file_id},
        )
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200, body
    url: str = body["url"]
    return url


def test_the_docs_session_runs_as_typed(host: Host, tmp_path: Path) -> None:
    """docs/embedding.md's curl session, against this host instead of uvicorn's default port."""
    session = [code for code in doc_shell_blocks() if "127.0.0.1:8000" in code]
    assert session, "docs/embedding.md lost its curl session"
    script = "set -euo pipefail\n" + "\n".join(session).replace("127.0.0.1:8000", host.origin[7:])
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(host.endpoint), lines
    assert lines[1:3] == ["hello", "bob gets 404"], lines
    assert lines[0].rsplit("/", 1)[1] in json.loads(lines[3])["uploads"]


def doc_shell_blocks() -> list[str]:
    text = (ROOT / "docs" / "embedding.md").read_text()
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```$", text, re.M | re.S)


@pytest.mark.browser
def test_demo_page_uploads_and_downloads_under_the_mount(
    browser: Browser,  # noqa: F811
    host: Host,
    tmp_path: Path,
) -> None:
    """The page's own calls (tus endpoint, file list, download link) go through the mount.
    The host's key rides on every request the browser makes, as a host's cookie would."""
    from playwright.sync_api import expect

    path, data = make_file(tmp_path, 300_000, seed=3)
    context = browser.new_context(accept_downloads=True, extra_http_headers=ALICE)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(f"{host.origin}{PREFIX}/")
        wait_ready(page)
        page.set_input_files("#file-input", str(path))
        row = page.locator(".upload")
        expect(row).to_have_attribute("data-state", "done", timeout=30_000)
        search_for(page, path.name)
        download_and_check(page, path.name, data)
        assert problems == []
    finally:
        context.close()
