"""Every claim the server uses is checked strictly, at the HTTP level, on a tus and a REST route.

A token signed with the right key is still refused (401 ``ERR_UNAUTHORIZED``, with the
``invalid_token`` challenge) when a claim is not exactly what it must be: an ``aud`` the server
does not identify with (RFC 7519 4.1.3: also when it has no audience configured), time claims
that are not JSON numbers, roles that are not an array of strings (never a substring match),
a subject unusable as an owner id.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.apphttp import serving
from tusserver.settings import Settings

SECRET = "c" * 40
ORIGIN = "http://t"
AUDIENCE = "tus-uploads"
ISSUER = "https://id.example"


def claims(**changes: Any) -> dict[str, Any]:
    """A good token's claims, with ``changes`` (None drops a claim)."""
    now = int(time.time())
    body: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600, **changes}
    return {k: v for k, v in body.items() if v is not None}


def signed(body: dict[str, Any]) -> str:
    if "iss" in body and not isinstance(body["iss"], str):
        return _hmac_with(SECRET.encode(), body)  # PyJWT will not encode such an iss
    return jwt.encode(body, SECRET, algorithm="HS256")


async def statuses(http: httpx.AsyncClient, token: str) -> tuple[int, int]:
    """(tus creation, REST listing) answers for ``token``; a refusal must be the stable one."""
    auth = {"Authorization": f"Bearer {token}"}
    tus = await http.post(f"{ORIGIN}/files/", headers={**auth, "Upload-Length": "1"})
    api = await http.get(f"{ORIGIN}/api/v1/files", headers=auth)
    for response in (tus, api):
        if response.status_code == 401:
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    if tus.status_code == 401:
        assert tus.text.startswith("ERR_UNAUTHORIZED")
    if api.status_code == 401:
        assert api.json()["error"]["code"] == "ERR_UNAUTHORIZED"
    return tus.status_code, api.status_code


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """No audience or issuer configured (the default)."""
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET, media_probe=False)
    async with serving(settings) as client:
        yield client


@pytest.fixture
async def http_audience(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path,
        jwt_secret=SECRET,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        media_probe=False,
    )
    async with serving(settings) as client:
        yield client


BAD_CLAIMS = [
    # An audience the server cannot identify with: it has none configured.
    pytest.param({"aud": "billing-service"}, id="aud-other-service"),
    pytest.param({"aud": ["billing-service", "mail"]}, id="aud-list"),
    pytest.param({"aud": ""}, id="aud-empty-string"),
    pytest.param({"aud": []}, id="aud-empty-list"),
    # Roles: an array of strings or nothing; a string is refused, whatever it says.
    pytest.param({"roles": "admin"}, id="roles-string-admin"),
    pytest.param({"roles": "user admin"}, id="roles-space-separated"),
    pytest.param({"roles": "notadmin"}, id="roles-notadmin"),
    pytest.param({"roles": {"admin": True}}, id="roles-object"),
    pytest.param({"roles": 1}, id="roles-number"),
    pytest.param({"roles": ["admin", 1]}, id="roles-mixed-array"),
    pytest.param({"roles": [["admin"]]}, id="roles-nested-array"),
    # NumericDate claims: JSON numbers, not numeric strings or booleans.
    pytest.param({"exp": str(int(time.time()) + 600)}, id="exp-string"),
    pytest.param({"nbf": "0"}, id="nbf-string"),
    pytest.param({"iat": "0"}, id="iat-string"),
    pytest.param({"iat": True}, id="iat-boolean"),
    pytest.param({"nbf": False}, id="nbf-boolean"),
    pytest.param({"iat": None, "nbf": [0]}, id="nbf-array"),
    # The subject becomes an owner id: printable, trimmed, 1..255 characters.
    pytest.param({"sub": ""}, id="sub-empty"),
    pytest.param({"sub": " alice"}, id="sub-leading-space"),
    pytest.param({"sub": "alice\n"}, id="sub-newline"),
    pytest.param({"sub": "al\x00ice"}, id="sub-nul"),
    pytest.param({"sub": "al\x1bice"}, id="sub-escape"),
    pytest.param({"sub": "\ud800"}, id="sub-lone-surrogate"),
    pytest.param({"sub": "a" * 256}, id="sub-too-long"),
    pytest.param({"sub": 42}, id="sub-number"),
    pytest.param({"sub": None}, id="sub-missing"),
]


@pytest.mark.parametrize("bad", BAD_CLAIMS)
async def test_a_bad_claim_is_refused_on_tus_and_rest_routes(
    http: httpx.AsyncClient, bad: dict[str, Any]
) -> None:
    assert await statuses(http, signed(claims(**bad))) == (401, 401)


async def test_a_good_token_still_works(http: httpx.AsyncClient) -> None:
    now = time.time()
    assert await statuses(http, signed(claims())) == (201, 200)
    # Fractional NumericDates are numbers too (RFC 7519 2); no roles claim means no roles.
    fractional = claims(iat=now - 1.5, nbf=now - 1.5, exp=now + 600.25)
    assert await statuses(http, signed(fractional)) == (201, 200)
    assert await statuses(http, signed(claims(roles=[]))) == (201, 200)
    assert await statuses(http, signed(claims(sub="auth0|5f7c8ec7c33c6c004bbafe82"))) == (201, 200)
    assert await statuses(http, signed(claims(sub="a" * 255))) == (201, 200)


async def test_roles_grant_admin_only_by_exact_membership(http: httpx.AsyncClient) -> None:
    alice = {"Authorization": f"Bearer {signed(claims())}"}
    created = await http.post(
        f"{ORIGIN}/files/",
        headers={**alice, "Upload-Length": "2", "Content-Type": "application/offset+octet-stream"},
        content=b"hi",
    )
    assert created.status_code == 201
    upload = created.headers["Location"]

    async def head_as(roles: list[str]) -> int:
        token = signed(claims(sub="bob", roles=roles))
        response = await http.head(upload, headers={"Authorization": f"Bearer {token}"})
        return response.status_code

    assert await head_as(["notadmin", "admins", "user admin", "Admin"]) == 404
    assert await head_as(["user", "admin"]) == 200


BAD_WITH_AUDIENCE = [
    pytest.param({"aud": "billing-service"}, id="aud-other-service"),
    pytest.param({"aud": ["billing-service"]}, id="aud-list-without-ours"),
    pytest.param({"aud": None}, id="aud-missing"),
    pytest.param({"aud": f"{AUDIENCE}-x"}, id="aud-prefix-match"),
    pytest.param({"aud": [AUDIENCE, 7]}, id="aud-list-with-a-number"),
    pytest.param({"iss": "https://evil.example"}, id="iss-other"),
    pytest.param({"iss": None}, id="iss-missing"),
    pytest.param({"iss": [ISSUER]}, id="iss-array"),
]


@pytest.mark.parametrize("bad", BAD_WITH_AUDIENCE)
async def test_a_configured_audience_and_issuer_must_match(
    http_audience: httpx.AsyncClient, bad: dict[str, Any]
) -> None:
    body = claims(**{"aud": AUDIENCE, "iss": ISSUER, **bad})
    assert await statuses(http_audience, signed(body)) == (401, 401)


async def test_a_matching_audience_and_issuer_pass(http_audience: httpx.AsyncClient) -> None:
    for aud in (AUDIENCE, [AUDIENCE], ["mail", AUDIENCE]):
        token = signed(claims(aud=aud, iss=ISSUER))
        assert await statuses(http_audience, token) == (201, 200)


async def test_the_token_command_output_passes_the_strict_checks(
    http_audience: httpx.AsyncClient,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env.update(TUS_JWT_SECRET=SECRET, TUS_JWT_AUDIENCE=AUDIENCE, TUS_JWT_ISSUER=ISSUER)
    done = subprocess.run(
        [sys.executable, "-m", "tusserver.cli", "token", "--sub", "erin", "--admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert await statuses(http_audience, done.stdout.strip()) == (201, 200)


# ---- algorithms: pinned to how keys are configured -------------------------------------------


def _unsigned(body: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


async def test_alg_none_is_refused(http: httpx.AsyncClient) -> None:
    assert await statuses(http, _unsigned(claims())) == (401, 401)


async def test_a_public_key_never_verifies_an_hmac_token(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(key.public_key()))
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}))
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = Settings(data_dir=tmp_path / "data", jwt_jwks=str(keys), media_probe=False)
    async with serving(settings) as http:
        good = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k1"})
        assert await statuses(http, good) == (201, 200)
        # HS256 "signed" with the public key the server holds: the classic confusion.
        confused = _hmac_with(pem, claims())
        assert await statuses(http, confused) == (401, 401)
        assert await statuses(http, _unsigned(claims())) == (401, 401)


def _hmac_with(secret: bytes, body: dict[str, Any]) -> str:
    """An HS256 token keyed with ``secret``, made by hand: PyJWT refuses a PEM as an HMAC key
    and a non-string ``iss``."""
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(json.dumps(body).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"
