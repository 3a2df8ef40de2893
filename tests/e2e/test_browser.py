"""The demo page (``/``) in a real browser: Debian's Chromium, headless, driven by Playwright.

The Python ``playwright`` package (dev extra) drives ``/usr/bin/chromium`` directly, so no
browser download is needed; CI installs the Debian package (.ci/run). Without either the tests
skip, except under ``CI``, where they fail: a CI that silently stopped testing the page would
look green.

The main test uploads a 20 MiB file in 1 MiB chunks with the upload bandwidth throttled (CDP
``Network.emulateNetworkConditions``), reloads the page half-way, picks the same file again and
checks on the server that the upload continued (same URL, offset > 0 before, one upload in
the data dir), then finds the file in the list, downloads it and compares the bytes. It saves
``test-artifacts/browser-demo.png`` (git-ignored) for a person to look at; a failing test
saves ``test-artifacts/<test>-failure.png``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tusserver.security.auth import mint_token

from .conftest import TusServer, head_offset, request, sha256

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, CDPSession, Page

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(180)]

MiB = 1024 * 1024
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# The sandbox has no network but loopback: without the background-networking switches Chromium
# keeps trying to reach its services, and its own connections fail in odd ways.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Slow enough that a 20 MiB upload is still running when the test reloads at 40 % (about
# 5 s in all), fast enough to keep the test short.
UPLOAD_BYTES_PER_SECOND = 4 * MiB


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh temporary profile (user data dir).
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def demo_page(
    browser: Browser, server: TusServer, name: str
) -> Iterator[tuple[BrowserContext, Page, list[str]]]:
    """A fresh context on the server's page; the list collects console errors and page
    exceptions (a CSP violation is a console error)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    try:
        page.goto(server.origin + "/")
        wait_ready(page)
        yield context, page, problems
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=ARTIFACTS / f"{name}-failure.png", full_page=True)
        raise
    finally:
        context.close()


def wait_ready(page: Page) -> None:
    page.wait_for_selector("body[data-ready='true']", state="attached", timeout=10_000)


def throttle_upload(cdp: CDPSession, bytes_per_second: int | None) -> None:
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second or -1,
        },
    )


def stored_uploads(page: Page) -> list[dict[str, Any]]:
    """What tus-js-client keeps in localStorage to resume after a reload."""
    found: list[dict[str, Any]] = page.evaluate(
        """() => Object.keys(localStorage)
                .filter((key) => key.startsWith("tus::"))
                .map((key) => JSON.parse(localStorage.getItem(key)))"""
    )
    return found


def make_file(tmp_path: Path, size: int, seed: int) -> tuple[Path, bytes]:
    # Deterministic pseudo-random bytes: a failure reproduces with the same content.
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"demo-{uuid.uuid4().hex[:8]}.bin"
    path.write_bytes(data)
    return path, data


def download_and_check(page: Page, name: str, data: bytes) -> None:
    row = page.locator("#files-body tr", has_text=name)
    with page.expect_download() as info:
        row.get_by_role("button", name=f"Download {name}").click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename == name
    assert sha256(Path(download.path()).read_bytes()) == sha256(data)


def search_for(page: Page, name: str) -> None:
    page.fill("#search", name)
    page.click("#search-form button[type=submit]")
    page.locator("#files-body tr", has_text=name).wait_for(timeout=10_000)


def test_upload_reload_resume_list_download(
    browser: Browser, tus_server: TusServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    path, data = make_file(tmp_path, 20 * MiB, seed=20)
    name = path.name
    with demo_page(browser, tus_server, "browser-demo") as (context, page, problems):
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        throttle_upload(cdp, UPLOAD_BYTES_PER_SECOND)
        page.select_option("#chunk-size", str(MiB))
        page.set_input_files("#file-input", str(path))

        page.wait_for_function(
            "() => Number(document.querySelector('.upload progress')?.value) >= 40",
            timeout=30_000,
        )
        # While it runs: percent, a speed and an ETA.
        figures = page.locator(".upload .figures").inner_text()
        assert re.search(r"\d+% · [\d.]+ MB/s · .* left", figures), figures
        stored = stored_uploads(page)
        assert len(stored) == 1, stored
        upload_url: str = stored[0]["uploadUrl"]
        assert upload_url.startswith(tus_server.base_url)

        page.reload()
        wait_ready(page)
        # The reload cut the PATCH; the server kept what had arrived.
        offset_before = head_offset(upload_url)
        assert MiB <= offset_before < len(data), offset_before
        # The page remembers it and shows how far the server got.
        unfinished = page.locator("#unfinished-list li", has_text=name)
        expect(unfinished).to_contain_text("on the server")
        expect(page.locator("#chunk-size")).to_have_value(str(MiB))  # options persist

        throttle_upload(cdp, None)
        page.set_input_files("#file-input", str(path))
        row = page.locator(".upload")
        expect(row).to_have_attribute("data-state", "done", timeout=60_000)
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-resumed", "true")
        expect(row).to_contain_text("resumed after reload from")
        expect(page.locator("#unfinished")).to_be_hidden()

        # The same upload finished: no second one was created.
        assert head_offset(upload_url) == len(data)
        upload_id = upload_url.rsplit("/", 1)[-1]
        assert [p.stem for p in tus_server.data_dir.glob("*.bin")] == [upload_id]
        assert stored_uploads(page) == []  # removeFingerprintOnSuccess

        search_for(page, name)
        listed = page.locator("#files-body tr")
        expect(listed).to_have_count(1)
        expect(listed).to_have_attribute("data-file-id", upload_id)
        expect(listed).to_contain_text("20 MiB")
        # The running hash lands a moment later; the page looks again after 2 s.
        expect(listed.locator("code")).to_have_attribute("title", sha256(data), timeout=10_000)

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "browser-demo.png", full_page=True)

        download_and_check(page, name, data)
        assert problems == []


def test_with_a_token(browser: Browser, server_factory: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    secret = secrets.token_urlsafe(48)
    server: TusServer = server_factory(TUS_JWT_SECRET=secret)
    token = mint_token(secret, "alice")
    path, data = make_file(tmp_path, 2 * MiB + 123, seed=7)
    name = path.name
    with demo_page(browser, server, "browser-auth") as (context, page, problems):
        # Without a token the list fails, and the page shows the API's error.
        expect(page.locator("#error")).to_contain_text("ERR_UNAUTHORIZED")
        expect(page.locator("#auth")).to_be_visible()

        page.fill("#token", token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#page-info")).to_contain_text("0 files")
        expect(page.locator("#error")).to_be_hidden()

        # Pause (abort without terminating) part-way through the single PATCH, then resume.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        throttle_upload(cdp, MiB // 2)  # about 4 s in all: time to click Pause
        page.set_input_files("#file-input", str(path))
        row = page.locator(".upload")
        page.wait_for_function(
            "() => Number(document.querySelector('.upload progress')?.value) >= 20",
            timeout=30_000,
        )
        row.get_by_role("button", name="Pause").click()
        expect(row).to_have_attribute("data-state", "paused")
        throttle_upload(cdp, None)
        row.get_by_role("button", name="Resume").click()
        expect(row).to_have_attribute("data-state", "done", timeout=30_000)
        expect(row).to_contain_text("last ")  # the summary counts only what the resume sent
        search_for(page, name)
        download_and_check(page, name, data)
        # The only console errors: the 401s of the list before the token was given.
        assert all("401" in text for text in problems), problems

    status, _, body = request(
        "GET", f"{server.origin}/api/v1/files", {"Authorization": f"Bearer {token}"}
    )
    assert status == 200, body
    items = json.loads(body)["items"]
    assert [(x["filename"], x["owner"], x["sha256"]) for x in items] == [
        (name, "alice", sha256(data))
    ]


def test_files_past_the_creation_burst_wait_and_finish(
    browser: Browser, server_factory: Any, tmp_path: Path
) -> None:
    """tus-js-client does not retry a 429: the page waits as Retry-After says and starts the
    refused uploads again, so a folder larger than the creation burst still arrives whole."""
    from playwright.sync_api import expect

    server: TusServer = server_factory(
        TUS_RATE_LIMIT_CREATIONS_PER_USER="60", TUS_RATE_LIMIT_CREATIONS_PER_USER_BURST="2"
    )
    files = [make_file(tmp_path, 1000 + n, seed=n) for n in range(5)]
    with demo_page(browser, server, "browser-rate-limit") as (_, page, problems):
        page.set_input_files("#file-input", [str(path) for path, _ in files])
        rows = page.locator(".upload")
        expect(rows).to_have_count(5)
        for n in range(5):
            expect(rows.nth(n)).to_have_attribute("data-state", "done", timeout=60_000)
        # Three of the five were refused at first (the browser logs each refusal).
        assert problems, "no upload was refused: the test did not reach the limit"
        assert all("429" in text for text in problems), problems

    status, _, body = request("GET", f"{server.origin}/api/v1/files?limit=100")
    assert status == 200, body
    stored = {(x["filename"], x["sha256"]) for x in json.loads(body)["items"]}
    assert stored == {(path.name, sha256(data)) for path, data in files}
