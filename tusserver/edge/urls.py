"""Absolute URLs the server hands out (tus ``Location``, signed download links)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from tusserver.settings import Settings
from tusserver.tus.protocol import request_base_url


def public_base(connection: HTTPConnection, settings: Settings) -> str:
    """``scheme://host[:port]``: ``TUS_PUBLIC_URL`` if set, else derived from the request
    (forwarded headers only with ``TUS_TRUST_PROXY``)."""
    if settings.public_url is not None:
        return settings.public_url
    scope = connection.scope
    server = scope.get("server")
    return request_base_url(
        scheme=scope.get("scheme", "http"),
        host=connection.headers.get("host"),
        server=(server[0], server[1]) if server else None,
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
        trust_proxy=settings.trust_proxy,
    )
