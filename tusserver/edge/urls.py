"""Absolute URLs the server hands out (tus ``Location``, signed download links).

Each starts with ``public_base``: the origin plus the prefix a host application mounted us
under (``tusserver.edge.mount``), so the one setting ``TUS_BASE_PATH`` stays mount-relative.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import Scope

from tusserver.edge.mount import prefix_of
from tusserver.settings import Settings
from tusserver.tus.protocol import request_base_url


def public_base(connection: HTTPConnection, settings: Settings) -> str:
    """``scheme://host[:port][/mount prefix]``: ``TUS_PUBLIC_URL`` if set, else derived from
    the request (forwarded headers only with ``TUS_TRUST_PROXY``); then the mount prefix."""
    return _origin(connection, settings) + prefix_of(connection.scope)


def _origin(connection: HTTPConnection, settings: Settings) -> str:
    if settings.public_url is not None:
        return settings.public_url
    scope = connection.scope
    server = scope.get("server")
    return request_base_url(
        scheme=scope.get("scheme", "http"),
        host=connection.headers.get("host"),
        server=(server[0], server[1]) if server else None,
        # Only a trusted proxy's headers are read: no dict of every header per request else.
        headers=_latin1_headers(scope) if settings.trust_proxy else {},
        trust_proxy=settings.trust_proxy,
    )


def _latin1_headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
