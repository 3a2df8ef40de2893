"""The browser demo page: ``GET /`` and its assets under ``/static/``.

Owns serving the page (``index.html``, ``static/app.js``, ``static/app.css``) and the vendored
tus-js-client browser build (``static/vendor/``, with its licence and pinned checksum), and the
security headers they are served with. ``TUS_WEB_UI=false`` leaves it out.

The page is public, like ``/healthz``: it holds no data of its own, and with authentication on
the user pastes a token into it, which the page then sends on every tus and API request. So it
is served by a pure ASGI middleware placed outside the auth middleware, rather than as routes
behind it (auth has no notion of one public exact path such as ``/``).

Mounted in a host application (``tusserver.embed``), the page's own links and the endpoints
it calls carry the mount prefix (``tusserver.edge.mount``): the page is rendered once per prefix.

The assets are a closed set read into memory when the app is built: no filesystem lookups per
request and no path to traverse, and an unknown name is a plain 404. They are a few hundred
KiB, with no build step, so names carry no content hash: answers say ``no-cache`` and carry an
``ETag``, and browsers revalidate cheaply.
"""

from __future__ import annotations

import hashlib
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver.edge.mount import prefix_of
from tusserver.settings import Settings

log = logging.getLogger("tusserver.web")

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static/"
PAGE_PATH = "/"
# Pages rendered for other mount prefixes than the first; a host mounts us at one or two.
_MAX_PAGES = 8

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Vendor notices (LICENSE-..., VERSIONS) have no suffix: shown as text.
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def content_security_policy(settings: Settings) -> str:
    """No inline code, nothing from another origin except where uploads must go.

    tus requests go to the ``Location`` the server answers, which is ``TUS_PUBLIC_URL`` when
    that is set and may be another origin than the one the page was loaded from. Downloads
    are navigations (an anchor click), which ``connect-src`` does not govern, so S3 presigned
    URLs need no entry here.
    """
    connect = ["'self'"]
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        connect.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # Thumbnails are fetched with the bearer token and shown from blob: URLs.
            "img-src 'self' data: blob:",
            "connect-src " + " ".join(connect),
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def render_page(settings: Settings, prefix: str = "") -> bytes:
    """index.html with this server's facts filled in as ``data-`` attributes on ``<body>``,
    where the page's script reads them (a JSON endpoint would cost a request, and an inline
    script is what the CSP forbids). ``prefix``: where a host mounted us."""
    text = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    facts = {
        "%BASE%": prefix,
        "%TUS_ENDPOINT%": prefix + settings.base_path,
        "%AUTH%": "required" if settings.auth_enabled else "off",
        "%CATALOG%": "on" if settings.catalog else "off",
    }
    for placeholder, value in facts.items():
        text = text.replace(placeholder, html.escape(value, quote=True))
    return text.encode("utf-8")


def load_assets(settings: Settings) -> dict[str, Asset]:
    """Every servable path and its bytes, read once."""
    assets = {PAGE_PATH: _asset(render_page(settings), _TYPES[".html"])}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            url = STATIC_PREFIX + path.relative_to(STATIC_DIR).as_posix()
            assets[url] = _asset(path.read_bytes(), _TYPES.get(path.suffix, _TEXT))
    return assets


def conflict(settings: Settings) -> str | None:
    """Why the page cannot be mounted beside this tus base path, if it cannot."""
    base = settings.base_path
    if base == PAGE_PATH or base.startswith(STATIC_PREFIX):
        return f"the tus base path {base} overlaps {PAGE_PATH} or {STATIC_PREFIX}"
    return None


def enabled(settings: Settings) -> bool:
    """Whether to mount the page; a clash with the tus base path is logged, never fatal (the
    tus endpoint matters more than the demo)."""
    if not settings.web_ui:
        return False
    reason = conflict(settings)
    if reason is not None:
        log.warning("web_ui.disabled: %s", reason)
        return False
    return True


class WebUI:
    """Answers ``GET``/``HEAD`` on the page and its assets; everything else passes through."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self._settings = settings
        self._assets = load_assets(settings)
        self._pages: dict[str, Asset] = {"": self._assets[PAGE_PATH]}
        self._headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PAGE_PATH and not path.startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return
        await self._answer(scope)(scope, receive, send)

    def _page(self, prefix: str) -> Asset:
        page = self._pages.get(prefix)
        if page is None:
            page = _asset(render_page(self._settings, prefix), _TYPES[".html"])
            if len(self._pages) < _MAX_PAGES:
                self._pages[prefix] = page
        return page

    def _answer(self, scope: Scope) -> Response:
        if scope["path"] == PAGE_PATH:
            asset: Asset | None = self._page(prefix_of(scope))
        else:
            asset = self._assets.get(scope["path"])
        headers = dict(self._headers)
        if asset is None:
            return Response("not found\n", 404, headers=headers, media_type=_TEXT)
        if scope["method"] not in ("GET", "HEAD"):
            headers["Allow"] = "GET, HEAD"
            return Response("method not allowed\n", 405, headers=headers, media_type=_TEXT)
        headers["ETag"] = asset.etag
        if asset.etag in _etags(Headers(scope=scope).get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        if scope["method"] == "HEAD":
            # The GET's length, no body: Starlette would send the body and leave dropping it
            # to the ASGI server.
            headers["Content-Length"] = str(len(asset.body))
            return Response(b"", headers=headers, media_type=asset.content_type)
        return Response(asset.body, headers=headers, media_type=asset.content_type)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
