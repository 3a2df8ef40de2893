"""Helpers shared by the REST upload API, idempotency and rate-limit tests: JSON and tus
requests against the app, tokens, and settings for the in-process or Redis-backed guards."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver.security.auth import mint_token

ORIGIN = "http://test"
API = f"{ORIGIN}/api/v1/uploads"
FILES = f"{ORIGIN}/files/"
SECRET = "s" * 40
OFFSET_OCTET = "application/offset+octet-stream"


def bearer(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, admin=admin)}"}


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def init_body(size: int, **overrides: Any) -> dict[str, Any]:
    return {"filename": "clip.mp4", "file_size": size, "content_type": "video/mp4", **overrides}


async def init(
    http: httpx.AsyncClient, size: int, headers: dict[str, str] | None = None, **overrides: Any
) -> httpx.Response:
    return await http.post(f"{API}/init", json=init_body(size, **overrides), headers=headers)


async def patch(
    http: httpx.AsyncClient,
    url: str,
    offset: int,
    data: bytes,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.patch(
        url,
        content=data,
        headers={"Upload-Offset": str(offset), "Content-Type": OFFSET_OCTET, **(headers or {})},
    )


async def created_count(http: httpx.AsyncClient) -> int:
    """Uploads this app created, from its own Prometheus counter (any state backend)."""
    text = (await http.get(f"{ORIGIN}/metrics")).text
    match = re.search(r"^tus_uploads_created_total ([0-9.e+]+)$", text, re.M)
    assert match, "tus_uploads_created_total missing from /metrics"
    return int(float(match.group(1)))


@pytest.fixture(params=["local", "redis"])
def guard_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings that put idempotency records and rate counters in this process (``local``)
    or in a real Redis (``redis``: upload state there too, under a prefix of the test's).
    Import it with ``redis_url`` (``from tests.services_redis import redis_url``)."""
    options: dict[str, Any] = {"data_dir": tmp_path, "media_probe": False}
    if request.param == "redis":
        options.update(
            state="redis",
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=f"t-{uuid.uuid4().hex[:12]}:",
        )
    return options


class FromClient:
    """Test stand-in for the network: ``X-Test-Client`` sets the connection's peer address."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope["client"] = (value.decode(), 40000)
        await self.app(scope, receive, send)
