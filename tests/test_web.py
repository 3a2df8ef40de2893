"""The demo page's serving (``tusserver.web``): paths, headers, the vendored client, the switch.

What the page does in a browser is tests/e2e/test_browser.py; these pin the HTTP side: a strict
CSP and no inline code it would block, a public page with auth on, the pinned tus-js-client
bytes, and that the page never shadows the tus endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from tests.apphttp import serving
from tusserver import web
from tusserver.security.auth import mint_token
from tusserver.settings import Settings

BASE = "http://test"
SECRET = "s" * 40


async def test_page_and_assets_with_their_headers(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path)) as http:
        page = await http.get(f"{BASE}/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        assert 'data-tus-endpoint="/files/"' in page.text
        assert 'data-auth="off"' in page.text
        assert 'data-catalog="on"' in page.text

        for path, media_type in [
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/static/app.css", "text/css; charset=utf-8"),
            ("/static/vendor/tus.min.js", "text/javascript; charset=utf-8"),
            ("/static/vendor/LICENSE-tus-js-client", "text/plain; charset=utf-8"),
            ("/static/favicon.svg", "image/svg+xml"),
        ]:
            response = await http.get(f"{BASE}{path}")
            assert response.status_code == 200, path
            assert response.headers["content-type"] == media_type, path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "content-security-policy" in response.headers

            head = await http.head(f"{BASE}{path}")
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(response.content))

            again = await http.get(
                f"{BASE}{path}", headers={"If-None-Match": response.headers["etag"]}
            )
            assert again.status_code == 304
            assert again.content == b""


async def test_unknown_paths_and_methods(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path)) as http:
        assert (await http.get(f"{BASE}/static/nope.js")).status_code == 404
        assert (await http.get(f"{BASE}/static/")).status_code == 404
        # Only the files read at startup exist: nothing outside the directory is reachable.
        assert (await http.get(f"{BASE}/static/%2e%2e/__init__.py")).status_code == 404
        assert (await http.get(f"{BASE}/static/../__init__.py")).status_code == 404
        refused = await http.post(f"{BASE}/", content=b"x")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        # The other routes are untouched.
        assert (await http.get(f"{BASE}/healthz")).status_code == 200
        discovery = await http.options(f"{BASE}/files/")
        assert discovery.status_code in (200, 204)
        assert "tus-version" in discovery.headers


async def test_the_page_is_public_when_auth_is_on(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET)
    async with serving(settings) as http:
        page = await http.get(f"{BASE}/")
        assert page.status_code == 200
        assert 'data-auth="required"' in page.text
        assert (await http.get(f"{BASE}/static/app.js")).status_code == 200
        # What the page calls still needs the token.
        assert (await http.get(f"{BASE}/api/v1/files")).status_code == 401
        token = mint_token(SECRET, "alice")
        listed = await http.get(
            f"{BASE}/api/v1/files", headers={"Authorization": f"Bearer {token}"}
        )
        assert listed.status_code == 200


async def test_switched_off(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path, web_ui=False)) as http:
        assert (await http.get(f"{BASE}/")).status_code == 404
        assert (await http.get(f"{BASE}/static/app.js")).status_code == 404


def test_never_shadows_the_tus_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    for base in ("/", "/static/uploads/"):
        with caplog.at_level(logging.WARNING, logger="tusserver.web"):
            assert not web.enabled(Settings(base_path=base))
        assert "web_ui.disabled" in caplog.text
        caplog.clear()
    assert web.enabled(Settings(base_path="/uploads/"))


async def test_page_follows_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        base_path="/uploads/",
        catalog=False,
        public_url="https://up.example.com",
    )
    async with serving(settings) as http:
        page = await http.get(f"{BASE}/")
        assert 'data-tus-endpoint="/uploads/"' in page.text
        assert 'data-catalog="off"' in page.text
        # tus requests follow the Location, which is on the public URL's origin.
        assert (
            "connect-src 'self' https://up.example.com;" in page.headers["content-security-policy"]
        )


def test_no_inline_code_or_foreign_origins() -> None:
    """What the CSP would block (inline scripts, styles, handlers) and what it would need
    opened up (another origin, a CDN) has no place in the page's own files."""
    html = (web.WEB_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"<style\b|\sstyle=|\son[a-z]+=", html) == []
    for path in [web.WEB_DIR / "index.html", *web.STATIC_DIR.glob("app.*")]:
        assert re.findall(r"https?://", path.read_text()) == [], path


def test_vendored_client_matches_its_pin() -> None:
    vendor = web.STATIC_DIR / "vendor"
    lines = [x for x in (vendor / "VERSIONS").read_text().splitlines() if not x.startswith("#")]
    pins = {}
    for line in lines:
        package, version, member, digest, licence, licence_file = line.split()
        pins[package] = (version, member, digest, licence, licence_file)
    version, member, digest, licence, licence_file = pins["tus-js-client"]
    assert (version, member, licence) == ("4.3.1", "dist/tus.min.js", "MIT")
    assert digest == "sha256:" + hashlib.sha256((vendor / "tus.min.js").read_bytes()).hexdigest()
    notice = (vendor / licence_file).read_text()
    assert "The MIT License" in notice
    assert "Copyright (c) 2015 tus - Resumable File Uploads" in notice
    # The bundle carries other packages' code; their notices travel with it.
    for bundled in ("js-base64", "url-parse", "ieee754", "buffer", "base64-js"):
        assert bundled in notice
