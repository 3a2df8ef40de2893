"""Every JSON route reads its body through one bounded reader: a deeply nested body, a lone
surrogate (escaped or as raw bytes), a NUL or bytes that are not UTF-8 are a 400 with a
stable code, never a 500 with a logged traceback. The same holds for the JSON inside the
tokens the public routes take (signed download URLs, local part URLs), which is parsed
before its signature is checked.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import ORIGIN, SECRET, bearer
from tests.apphttp import serving
from tusserver.settings import Settings

ID = "0" * 32
# (method, path, needs a bearer token)
JSON_ROUTES = [
    ("POST", "/api/v1/uploads/init", True),
    ("POST", "/api/v1/uploads/complete", True),
    ("POST", "/api/v1/uploads/presigned", True),
    ("POST", "/api/v1/uploads/multipart", True),
    ("POST", f"/api/v1/uploads/multipart/{ID}/complete", True),
    ("PATCH", f"/api/v1/files/{ID}", True),
    ("POST", "/api/v1/delivery/download-url", True),
    ("POST", "/api/v1/delivery/batch-download-urls", True),
    ("POST", "/api/v1/delivery/tokens", True),
    # Public: redeeming a one-time token needs no login.
    ("POST", "/api/v1/delivery/redeem", False),
]
DEEP = b"[" * 5000
BAD_BODIES = [
    (DEEP, "ERR_JSON_TOO_DEEP"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "ERR_JSON_TOO_DEEP"),
    (b'{"token": "\\ud800"}', "ERR_INVALID_TEXT"),
    (b'{"\\udfff": "x"}', "ERR_INVALID_TEXT"),
    (b'{"token": "a\\u0000"}', "ERR_INVALID_TEXT"),
    (b'{"token": "\xed\xa0\x80"}', "ERR_INVALID_TEXT"),
    (b'{"token": "\xc3"}', "ERR_INVALID_TEXT"),
]


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, media_probe=False, jwt_secret=SECRET)
    async with serving(settings) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "auth"), JSON_ROUTES)
async def test_every_json_route_refuses_deep_or_unstorable_bodies_with_400(
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    auth: bool,
) -> None:
    headers = {"Content-Type": "application/json", **(bearer("alice") if auth else {})}
    for body, expected in BAD_BODIES:
        response = await http.request(method, ORIGIN + path, content=body, headers=headers)
        assert response.status_code == 400, (body[:20], response.text)
        assert response.json()["error"]["code"] == expected
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_json_bodies_refuse_nan_and_accept_a_bom(http: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json", **bearer("alice")}
    url = f"{ORIGIN}/api/v1/uploads/init"
    nan = b'{"filename": "a.txt", "file_size": NaN, "content_type": "text/plain"}'
    response = await http.post(url, content=nan, headers=headers)
    assert response.status_code == 422
    body = b'{"filename": "a.txt", "file_size": 5, "content_type": "text/plain"}'
    response = await http.post(url, content=b"\xef\xbb\xbf" + body, headers=headers)
    assert response.status_code == 201, response.text


def forged_token(payload: bytes) -> str:
    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{encode(payload)}.{encode(b'x' * 32)}"


@pytest.mark.parametrize("path", ["/d/", "/api/v1/uploads/direct-parts/"], ids=["download", "part"])
@pytest.mark.parametrize("payload", [b"[" * 1500, b'{"k": "\\ud800"}'], ids=["deep", "surrogate"])
async def test_public_token_routes_refuse_forged_json_payloads_with_403(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str, payload: bytes
) -> None:
    url = ORIGIN + path + forged_token(payload)
    method = "GET" if path == "/d/" else "PUT"
    response = await http.request(method, url, content=b"" if method == "PUT" else None)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "ERR_SIGNATURE_INVALID"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("method", "path", "auth"), JSON_ROUTES)
async def test_a_json_body_cut_short_is_400_not_a_logged_500(
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    auth: bool,
) -> None:
    # The client promises 500 bytes, sends one and goes away.
    from tests.asgi_harness import call

    headers = {"content-type": "application/json", "content-length": "500"}
    if auth:
        headers.update({k.lower(): v for k, v in bearer("alice").items()})
    app = http.app  # type: ignore[attr-defined]
    reply = await call(app, method, path, headers, [b"{"], ending="disconnect")
    assert reply.status == 400, reply.body
    assert b"ERR_BODY_INCOMPLETE" in reply.body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
