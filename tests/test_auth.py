"""Authentication and ownership: tokens are verified on every route, a user never reaches
another user's upload or file, and the server refuses to run open on a public address."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.apphttp import serving
from tests.netutil import free_port
from tusserver import errors
from tusserver.cli import refuse_insecure_bind
from tusserver.security.auth import TokenVerifier, mint_token
from tusserver.settings import Settings

SECRET = "k" * 40


def token(sub: str = "alice", *, admin: bool = False, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 600, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    if admin:
        body["roles"] = ["admin"]
    return jwt.encode(body, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# ---- the verifier ---------------------------------------------------------------------------


async def test_a_valid_token_gives_its_subject_and_roles() -> None:
    verifier = TokenVerifier(secret=SECRET)
    assert (await verifier.verify(token("alice"))).user_id == "alice"
    admin = await verifier.verify(token("root", admin=True))
    assert admin.admin
    assert admin.owner_filter is None
    assert (await verifier.verify(token("bob"))).owner_filter == "bob"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


GOOD = {"aud": "tus", "iss": "https://issuer", "exp": 2**40}


def good(**changes: Any) -> str:
    """A token the strict verifier below accepts, with ``changes`` (None drops a claim)."""
    claims = {"sub": "alice", **GOOD, **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET)


def strict() -> TokenVerifier:
    return TokenVerifier(secret=SECRET, audience="tus", issuer="https://issuer")


async def test_the_strict_verifier_accepts_the_good_token() -> None:
    assert (await strict().verify(good())).user_id == "alice"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: good(exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda: jwt.encode({**GOOD, "sub": "a"}, "x" * 40), id="forged"),
        pytest.param(lambda: _unsigned({**GOOD, "sub": "alice"}), id="alg-none"),
        pytest.param(lambda: good(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda: good(aud=None), id="no-audience"),
        pytest.param(lambda: good(iss="evil"), id="wrong-issuer"),
        pytest.param(lambda: good(sub=None), id="no-subject"),
        pytest.param(lambda: good(exp=None), id="no-expiry"),
        pytest.param(lambda: good() + "x", id="tampered"),
        pytest.param(lambda: "not.a.token", id="garbage"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "a" * 9000, id="huge"),
    ],
)
async def test_bad_tokens_are_refused(bad: Any) -> None:
    with pytest.raises(errors.Unauthorized):
        await strict().verify(bad())


async def test_a_token_inside_the_leeway_passes_and_beyond_it_fails() -> None:
    verifier = TokenVerifier(secret=SECRET, leeway=30)
    assert await verifier.verify(token(exp=int(time.time()) - 10))
    with pytest.raises(errors.Unauthorized, match="expired"):
        await verifier.verify(token(exp=int(time.time()) - 60))


def _jwks(keys: dict[str, Any]) -> str:
    out = []
    for kid, key in keys.items():
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        jwk = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key()))
        out.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
    return json.dumps({"keys": out})


@pytest.fixture(scope="module")
def keypairs() -> dict[str, Any]:
    return {
        "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec-1": ec.generate_private_key(ec.SECP256R1()),
    }


async def test_public_keys_from_a_jwks_file(tmp_path: Path, keypairs: dict[str, Any]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(_jwks(keypairs))
    verifier = TokenVerifier(jwks=str(path))
    claims = {"sub": "carol", "exp": int(time.time()) + 60}
    rs = jwt.encode(claims, keypairs["rsa-1"], algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims, keypairs["ec-1"], algorithm="ES256", headers={"kid": "ec-1"})
    assert (await verifier.verify(rs)).user_id == "carol"
    assert (await verifier.verify(es)).user_id == "carol"
    # An HS256 token "signed" with the public key must not pass (algorithm confusion).
    with pytest.raises(errors.Unauthorized):
        await verifier.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.Unauthorized):
        await verifier.verify(
            jwt.encode(claims, other, algorithm="RS256", headers={"kid": "rsa-1"})
        )


@pytest.fixture
def jwks_url(keypairs: dict[str, Any]) -> Iterator[str]:
    body = _jwks(keypairs).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


async def test_public_keys_from_a_jwks_url(jwks_url: str, keypairs: dict[str, Any]) -> None:
    verifier = TokenVerifier(jwks=jwks_url)
    claims = {"sub": "dave", "exp": int(time.time()) + 60}
    rs = jwt.encode(claims, keypairs["rsa-1"], algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await verifier.verify(rs)).user_id == "dave"


def test_short_secrets_and_two_modes_at_once_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        Settings(jwt_secret="short")
    with pytest.raises(ValueError, match="not both"):
        Settings(jwt_secret=SECRET, jwt_jwks="/keys.json")


# ---- through the app ------------------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET, media_probe=False)
    async with serving(settings) as http:
        yield http


async def create(http: httpx.AsyncClient, user: str, data: bytes = b"", **headers: str) -> str:
    response = await http.post(
        "http://t/files/",
        content=data,
        headers={
            "Upload-Length": str(len(data) or 10),
            **({"Content-Type": "application/offset+octet-stream"} if data else {}),
            **bearer(token(user)),
            **headers,
        },
    )
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


async def test_no_token_is_401_with_a_bearer_challenge_on_every_route(
    app: httpx.AsyncClient,
) -> None:
    upload_id = await create(app, "alice")
    for method, url in [
        ("POST", "http://t/files/"),
        ("HEAD", f"http://t/files/{upload_id}"),
        ("PATCH", f"http://t/files/{upload_id}"),
        ("GET", f"http://t/files/{upload_id}"),
        ("DELETE", f"http://t/files/{upload_id}"),
        ("GET", "http://t/api/v1/files"),
        ("GET", f"http://t/api/v1/files/{upload_id}"),
    ]:
        response = await app.request(method, url, headers={"Upload-Length": "1"})
        assert response.status_code == 401, (method, url)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if "/files/" in url and "/api/" not in url:
            assert response.headers["Tus-Resumable"] == "1.0.0"
        elif method != "HEAD":
            assert response.json()["error"]["code"] == "ERR_UNAUTHORIZED"
    bad = await app.get("http://t/api/v1/files", headers=bearer("x.y.z"))
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    basic = await app.get("http://t/api/v1/files", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401


async def test_preflights_and_health_need_no_token(app: httpx.AsyncClient) -> None:
    preflight = await app.options(
        "http://t/files/",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code in (200, 204)
    assert (await app.options("http://t/files/")).status_code in (200, 204)
    assert (await app.get("http://t/healthz")).status_code == 200
    assert (await app.get("http://t/readyz")).status_code == 200


async def test_another_user_gets_nothing_from_any_route(app: httpx.AsyncClient) -> None:
    data = b"alice's bytes"
    upload_id = await create(app, "alice", data)
    pending = await create(app, "alice")
    bob = bearer(token("bob"))
    tus = {"Tus-Resumable": "1.0.0"}
    attempts = [
        await app.head(f"http://t/files/{upload_id}", headers=bob),
        await app.get(f"http://t/files/{upload_id}", headers=bob),
        await app.patch(
            f"http://t/files/{pending}",
            content=b"x",
            headers={
                **bob,
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        ),
        await app.delete(f"http://t/files/{upload_id}", headers=bob),
        await app.get(f"http://t/api/v1/files/{upload_id}", headers=bob),
        await app.get(f"http://t/api/v1/files/by-key/{upload_id}.bin", headers=bob),
        await app.patch(f"http://t/api/v1/files/{upload_id}", json={"filename": "x"}, headers=bob),
        await app.delete(f"http://t/api/v1/files/{upload_id}", headers=bob),
    ]
    assert [r.status_code for r in attempts] == [404] * len(attempts)
    listing = await app.get("http://t/api/v1/files", headers=bob)
    assert listing.json()["total_count"] == 0
    # Concatenating alice's partial into bob's final would copy her bytes: refused.
    partial = await create(app, "alice", b"part", **{"Upload-Concat": "partial"})
    final = await app.post(
        "http://t/files/",
        headers={**bob, "Upload-Concat": f"final;/files/{partial}"},
    )
    assert final.status_code == 400
    # Alice's upload is untouched; an admin sees it.
    mine = await app.get(f"http://t/files/{upload_id}", headers=bearer(token("alice")))
    assert mine.content == data
    admin = bearer(token("root", admin=True))
    assert (await app.head(f"http://t/files/{upload_id}", headers=admin)).status_code == 200
    assert (await app.get(f"http://t/api/v1/files/{upload_id}", headers=admin)).status_code == 200


async def test_the_owner_is_the_token_subject(app: httpx.AsyncClient) -> None:
    upload_id = await create(app, "alice", b"abc")
    record = await app.get(f"http://t/api/v1/files/{upload_id}", headers=bearer(token("alice")))
    assert record.json()["owner"] == "alice"


# ---- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "overrides", "refused"),
    [
        ("127.0.0.1", {}, False),
        ("::1", {}, False),
        ("localhost", {}, False),
        ("0.0.0.0", {}, True),
        ("192.168.1.5", {}, True),
        ("0.0.0.0", {"insecure": True}, False),
        ("0.0.0.0", {"jwt_secret": SECRET}, False),
    ],
)
def test_a_public_address_without_auth_is_refused(
    host: str, overrides: dict[str, Any], refused: bool
) -> None:
    reason = refuse_insecure_bind(Settings(host=host, **overrides))
    assert (reason is not None) == refused
    if refused:
        assert "--insecure" in (reason or "")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    return subprocess.run(
        [sys.executable, "-m", "tusserver.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_on_a_public_address_without_a_secret_exits_with_a_reason() -> None:
    done = _cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "without authentication" in done.stderr


async def test_the_token_command_prints_a_token_the_server_accepts() -> None:
    done = _cli("token", "--sub", "erin", "--admin", "--ttl", "120", TUS_JWT_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    principal = await TokenVerifier(secret=SECRET).verify(done.stdout.strip())
    assert principal.user_id == "erin"
    assert principal.admin
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert 100 <= claims["exp"] - claims["iat"] <= 120
    assert _cli("token", "--sub", "x").returncode == 2  # no secret configured


@pytest.mark.parametrize("subject", [" alice", "bob\n", ""])
def test_the_token_command_refuses_a_subject_the_server_would_refuse(subject: str) -> None:
    done = _cli("token", "--sub", subject, TUS_JWT_SECRET=SECRET)
    assert done.returncode == 2
    assert "subject" in done.stderr
    assert done.stdout == ""


def test_mint_token_round_trips() -> None:
    value = mint_token(SECRET, "frank", ttl=60)
    assert jwt.decode(value, SECRET, algorithms=["HS256"])["sub"] == "frank"
