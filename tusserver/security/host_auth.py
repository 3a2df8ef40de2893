"""A host application's authentication, in place of our JWTs, when it embeds us.

Owns adapting a plain async function of the host's choosing, ``(connection) -> Principal |
None``, to the auth middleware's ``Authenticator``. The function sees the request as a
Starlette ``HTTPConnection``: headers, cookies, and whatever the host's own middleware put in
the scope (``scope["user"]``, ``scope["session"]``). None means "nobody": a 401, like a
missing token. A principal whose user id could not be an owner (empty, too long, control
characters, outer spaces) is refused the same way, as the id may come straight from a header.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import HTTPConnection
from starlette.types import Scope

from tusserver import errors
from tusserver.security.principal import Principal, is_valid_subject

log = logging.getLogger("tusserver.auth")

_REQUIRED = "authentication is required"

AuthenticateFn = Callable[[HTTPConnection], Awaitable[Principal | None]]


class HostAuthenticator:
    """``Authenticator`` over the host's function; sends no ``WWW-Authenticate`` challenge
    (the scheme is the host's, unknown to us)."""

    def __init__(self, authenticate: AuthenticateFn) -> None:
        self._authenticate = authenticate

    async def authenticate(self, scope: Scope) -> Principal:
        # Typed loosely on purpose: the host's function is checked, not trusted.
        principal: object = await self._authenticate(HTTPConnection(scope))
        if principal is None:
            raise errors.Unauthorized(_REQUIRED)
        if not isinstance(principal, Principal):
            # The host's bug, not the client's: said loudly, still no 500 for the client.
            log.error("auth.host_authenticator_returned: %s", type(principal).__name__)
            raise errors.Unauthorized(_REQUIRED)
        if not is_valid_subject(principal.user_id):
            log.info("auth.rejected", extra={"reason": "host:user_id"})
            raise errors.Unauthorized("the user id is invalid")
        return principal

    def challenge(self, scope: Scope) -> str | None:
        return None
