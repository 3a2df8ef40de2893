"""Authentication: bearer JWTs verified on every request, turned into a ``Principal``.

Owns token verification (HS256 with a shared secret, or RS256/ES256 with public keys from a
JWKS file or URL, each key verifying only its own algorithm; issuer, audience and expiry
checked with a small leeway, and every claim used of its exact JSON type), the middleware
that puts the caller's principal in the ASGI scope, and minting development tokens.

Every tus request (creation, HEAD, PATCH, GET, DELETE) and every API route is checked, not
only creation: an upload URL alone never grants access to the upload. CORS preflights,
health, readiness and metrics, and routes that carry their own signature (``public_prefixes``)
need no token. Without a secret or keys the server runs as one anonymous local user.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeGuard

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tusserver import errors
from tusserver.edge.jsonapi import json_error
from tusserver.edge.responses import error_response
from tusserver.security.principal import SCOPE_KEY, Principal
from tusserver.settings import Settings

if TYPE_CHECKING:
    import jwt

# pyjwt (with cryptography, about 9 MiB of memory) is imported by the functions that verify or
# mint tokens, so a server without auth never loads it.

log = logging.getLogger("tusserver.auth")

HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
# Paths that never need a token: liveness, readiness and metrics are for the infrastructure.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_MAX_TOKEN = 8192
# NumericDate claims (RFC 7519 2): JSON numbers only.
_TIME_CLAIMS = ("exp", "nbf", "iat")
# The subject becomes the owner of uploads and files: the catalog's owner column holds 255.
_MAX_SUBJECT = 255


class TokenVerifier:
    """Checks a compact JWT and returns its principal, or raises ``Unauthorized``."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        roles_claim: str = "roles",
    ) -> None:
        import jwt

        if (secret is None) == (jwks is None):
            raise ValueError("give a secret or a JWKS source")
        self._secret = secret
        self._algorithms = list(HMAC_ALGORITHMS if secret is not None else PUBLIC_KEY_ALGORITHMS)
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._roles_claim = roles_claim
        self._jwks_client: jwt.PyJWKClient | None = None
        self._jwks_file: jwt.PyJWKSet | None = None
        if jwks is not None:
            if jwks.startswith("https://") or jwks.startswith("http://"):
                self._jwks_client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=3600)
            else:
                self._jwks_file = jwt.PyJWKSet.from_json(Path(jwks).read_text())

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        if not settings.auth_enabled:
            return None
        return cls(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks=settings.jwt_jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway,
            roles_claim=settings.jwt_roles_claim,
        )

    async def verify(self, token: str) -> Principal:
        import jwt

        if not token or len(token) > _MAX_TOKEN:
            raise errors.Unauthorized()
        try:
            key = await self._key_for(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                # Pinned per mode: "none", and HS256 signed with a public key, never pass.
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthorized("the token has expired") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError, ValueError, KeyError) as exc:
            # Why, for the operator; never the token itself.
            log.info("auth.rejected", extra={"reason": type(exc).__name__})
            raise errors.Unauthorized() from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        """The principal of verified claims, each of the exact JSON type it must have.

        PyJWT reads the time claims with ``int()`` (``"exp": "99999999999"`` passes) and lets
        an ``aud`` through when no audience is configured only if it is empty; both are
        refused here, as are roles that are not an array of strings.
        """
        if self._audience is None and "aud" in claims:
            # RFC 7519 4.1.3: a recipient that does not identify itself with a value of a
            # present "aud" must reject the token; with no audience configured, none does.
            _reject("aud", "the token is meant for another audience")
        for name in _TIME_CLAIMS:
            if name in claims and not _is_number(claims[name]):
                _reject(name, f"the token's {name} is not a number")
        subject = claims.get("sub")
        if not _is_valid_subject(subject):
            _reject("sub", "the token's subject is invalid")
        roles = claims.get(self._roles_claim, [])
        # Only an array of strings, matched exactly: "user admin" or "notadmin" as one
        # string is no role list, and a substring test would read "admin" into both.
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            _reject("roles", "the token's roles claim must be an array of strings")
        return Principal(user_id=subject, admin="admin" in roles)

    async def _key_for(self, token: str) -> Any:
        if self._secret is not None:
            return self._secret
        if self._jwks_file is not None:
            import jwt

            kid = jwt.get_unverified_header(token).get("kid")
            for key in self._jwks_file.keys:
                if kid is None or key.key_id == kid:
                    # The JWK itself, not its raw key: PyJWT then verifies with the key's own
                    # algorithm only (an RSA key never checks an ES256 or HS256 token).
                    return key
            raise KeyError("unknown key id")
        assert self._jwks_client is not None
        # PyJWKClient fetches with urllib (blocking); keys are cached after the first call.
        client = self._jwks_client
        return await asyncio.to_thread(client.get_signing_key_from_jwt, token)


def _reject(claim: str, message: str) -> NoReturn:
    log.info("auth.rejected", extra={"reason": f"claim:{claim}"})
    raise errors.Unauthorized(message)


def _is_number(value: object) -> bool:
    # bool is an int in Python but true/false in JSON; NaN and infinities are no dates. An int
    # of any size is finite (math.isfinite would overflow on a huge one).
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_valid_subject(value: object) -> TypeGuard[str]:
    """A subject usable as an owner id: stored in the catalog, logged, hashed into keys.

    Printable only (no controls, which would forge log lines or key separators, and no lone
    surrogates, which cannot be encoded) and no surrounding whitespace ("alice " is not
    "alice" to the database, yet looks like it).
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_SUBJECT
        and value.isprintable()
        and value == value.strip()
    )


def mint_token(
    secret: str,
    subject: str,
    *,
    admin: bool = False,
    ttl: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    roles_claim: str = "roles",
) -> str:
    """An HS256 token for development (``tusserver token``).

    ValueError for a subject the verifier would refuse: minting a token that can never be
    used only moves the surprise to the first request.
    """
    import jwt

    if not _is_valid_subject(subject):
        raise ValueError("the subject must be 1 to 255 printable characters, no outer spaces")

    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl}
    if admin:
        claims[roles_claim] = ["admin"]
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class _Paths:
    tus_base: str
    public_prefixes: tuple[str, ...]

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(self.public_prefixes)

    def is_tus(self, path: str) -> bool:
        return path.startswith(self.tus_base) or path == self.tus_base.rstrip("/")


class AuthMiddleware:
    """Verifies the bearer token of every request that needs one; 401 otherwise.

    Sits inside CORS (a browser can read the 401) and outside everything else. A tus path is
    answered in tus's shape (``Tus-Resumable``, text), any other in the API's JSON shape.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier,
        tus_base: str,
        public_prefixes: Sequence[str] = (),
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._paths = _Paths(tus_base, tuple(public_prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self._paths.is_public(path):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self._verifier.verify(_bearer(scope))
        except errors.TusError as error:
            await self._reject(error, scope, receive, send)
            return
        scope[SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    async def _reject(
        self, error: errors.TusError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # RFC 6750 3: the challenge; invalid_token tells clients to get a fresh one.
        challenge = 'Bearer realm="tusserver"'
        if _has_authorization(scope):
            challenge += ', error="invalid_token"'
        error.headers["WWW-Authenticate"] = challenge
        response: Response
        if self._paths.is_tus(scope["path"]):
            response = error_response(error, method=scope["method"])
        else:
            response = json_error(error)
        await response(scope, receive, send)


def _has_authorization(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


def _bearer(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            header: str = bytes(value).decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
            raise errors.Unauthorized("use the Bearer scheme")
    raise errors.Unauthorized()
